"""A stand-in for CuPy in tests that have no GPU: NumPy arrays of a subclass whose type lives
in a module named "cupy" (what seqtool.core.xp.is_device_array looks at), strict the way CuPy is.

CuPy refuses to mix its arrays with NumPy arrays in one operation (0-d ones included, except
in comparisons), and a CPU (Numba) kernel cannot take them; the stand-in raises TypeError in
both cases, so that a test run of the --device cuda array path (with the CUDA kernels in
Numba's simulator) finds the places where a host array meets a device one. Conversions are
explicit, as in CuPy: cupy.asarray(host), device.get(). What it cannot catch:
np.asarray(device_array) and host[...] = device_array work on this NumPy subclass where CuPy
would raise (NumPy does not ask an ndarray subclass before viewing or copying it).
"""
import numpy as _np

HOST_MIX = "host and device arrays mixed in one operation"


# CuPy turns a 0-d NumPy array into a scalar only in comparisons; elsewhere it refuses it too
_COMPARISONS = {_np.equal, _np.not_equal, _np.less, _np.less_equal, _np.greater, _np.greater_equal}


def _is_host(a, allow_0d=False):
    return type(a) is _np.ndarray and (a.ndim > 0 or not allow_0d)


def _walk(obj):
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _walk(o)
    else:
        yield obj


def _check(args, kwargs=None, allow_0d=False):
    values = list(_walk(list(args) + list((kwargs or {}).values())))
    if any(isinstance(v, ndarray) for v in values) and any(_is_host(v, allow_0d) for v in values):
        raise TypeError(HOST_MIX)


def _device(result):
    if type(result) is _np.ndarray:
        return result.view(ndarray)
    if isinstance(result, _np.generic):  # CuPy's reductions give 0-d device arrays
        return _np.asarray(result).view(ndarray)
    if isinstance(result, (tuple, list)):
        return type(result)(_device(r) for r in result)
    return result


def _host(obj):
    """Device arrays (also inside lists and tuples) as host views, for NumPy to compute on."""
    if isinstance(obj, ndarray):
        return obj.view(_np.ndarray)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_host(o) for o in obj)
    return obj


class ndarray(_np.ndarray):
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _check(inputs, kwargs, allow_0d=ufunc in _COMPARISONS)
        host_in = _host(inputs)
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(o.view(_np.ndarray) if isinstance(o, ndarray) else o for o in out)
        result = getattr(ufunc, method)(*host_in, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _device(result)

    def __array_function__(self, func, types, args, kwargs):
        _check(args, kwargs)
        return _device(func(*_host(args), **{k: _host(v) for k, v in kwargs.items()}))

    @property
    def _numba_type_(self):  # numba.typeof asks this first: a CPU kernel must not get one
        raise TypeError("a device array was passed to a CPU (Numba) kernel")

    def get(self):
        return _np.array(self.view(_np.ndarray))


def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray) and (dtype is None or a.dtype == dtype):
        return a
    host = a.get() if isinstance(a, ndarray) else a
    return _np.array(host, dtype=dtype, order=order or "K").view(ndarray)


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        raise TypeError("cupy.ascontiguousarray takes a device array")
    return _np.ascontiguousarray(a.view(_np.ndarray), dtype=dtype).view(ndarray)


def __getattr__(name):
    # everything else: NumPy's function of that name on device arrays, returning device arrays
    obj = getattr(_np, name)
    if isinstance(obj, type) or not callable(obj):
        return obj  # dtypes (cupy.int64) and constants

    def device_function(*args, **kwargs):
        _check(args, kwargs)
        return _device(obj(*_host(args), **{k: _host(v) for k, v in kwargs.items()}))

    return device_function


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1


class _Device:
    def synchronize(self):
        pass


class cuda:  # noqa: N801 (CuPy's spelling)
    runtime = _Runtime
    Device = _Device
