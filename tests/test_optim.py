"""seqtool.optim against (1) update rules written out here from the torch.optim docs' algorithm
boxes and (2) torch.optim itself, on identical float64 parameters and gradient sequences."""

import io
import json
import math

import numpy as np
import pytest

from seqtool import optim
from seqtool.errors import SeqtoolError, UsageError

SHAPES = [(3, 4), (5,), (2, 1, 3)]
N_STEPS = 6
# (param index, step) pairs whose grad is None: that parameter is skipped and, as in torch,
# its own step counter does not advance.
NO_GRAD = {(2, 1), (2, 3)}


class P:
    """Stand-in for seqtool's Parameter: just .data and .grad."""

    def __init__(self, data, grad=None):
        self.data = data
        self.grad = grad


def initial(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


NOISE = [[np.random.default_rng(100 + t).standard_normal(s) for s in SHAPES] for t in range(N_STEPS + 4)]


def grad_at(t, i, data):
    """Gradient of step t for parameter i: noise plus a pull towards zero (depends on params)."""
    if (i, t) in NO_GRAD:
        return None
    return (NOISE[t][i] + 0.3 * data.astype(np.float64)).astype(data.dtype)


def set_grads(params, t):
    for i, p in enumerate(params):
        p.grad = grad_at(t, i, p.data)


# ---- references from the published update rules (torch.optim docs) --------------------------


def ref_sgd(p, g, st, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        if st["t"] > 1:
            st["b"] = momentum * st["b"] + (1 - dampening) * g
        else:
            st["b"] = g.copy()
        g = g + momentum * st["b"] if nesterov else st["b"]
    return p - lr * g


def ref_adam(p, g, st, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    b1, b2 = betas
    t = st["t"]
    if decoupled:
        p = p - lr * weight_decay * p
    elif weight_decay:
        g = g + weight_decay * p
    st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
    st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
    m_hat = st["m"] / (1 - b1**t)
    if amsgrad:
        st["vmax"] = np.maximum(st.get("vmax", 0.0), st["v"])
        v_hat = st["vmax"] / (1 - b2**t)
    else:
        v_hat = st["v"] / (1 - b2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_adamw(p, g, st, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
    return ref_adam(p, g, st, lr, betas, eps, weight_decay, amsgrad, decoupled=True)


def ref_adagrad(p, g, st, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    lr_t = lr / (1 + (st["t"] - 1) * lr_decay)
    if weight_decay:
        g = g + weight_decay * p
    st["s"] = st.get("s", initial_accumulator_value) + g * g
    return p - lr_t * g / (np.sqrt(st["s"]) + eps)


def ref_adadelta(p, g, st, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
    if weight_decay:
        g = g + weight_decay * p
    st["v"] = rho * st.get("v", 0.0) + (1 - rho) * g * g
    dx = np.sqrt(st.get("u", 0.0) + eps) / np.sqrt(st["v"] + eps) * g
    st["u"] = rho * st.get("u", 0.0) + (1 - rho) * dx * dx
    return p - lr * dx


def ref_rmsprop(p, g, st, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    if weight_decay:
        g = g + weight_decay * p
    st["v"] = alpha * st.get("v", 0.0) + (1 - alpha) * g * g
    v = st["v"]
    if centered:
        st["ga"] = alpha * st.get("ga", 0.0) + (1 - alpha) * g
        v = v - st["ga"] ** 2
    if momentum > 0:
        st["b"] = momentum * st.get("b", 0.0) + g / (np.sqrt(v) + eps)
        return p - lr * st["b"]
    return p - lr * g / (np.sqrt(v) + eps)


REFS = {"SGD": ref_sgd, "Adam": ref_adam, "AdamW": ref_adamw, "Adagrad": ref_adagrad,
        "Adadelta": ref_adadelta, "RMSprop": ref_rmsprop}

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True, eps=1e-6)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.1)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.05)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(centered=True, momentum=0.9, eps=1e-3)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}" for n, kw in CONFIGS]


def run_ours(name, kw, init, n_steps=N_STEPS):
    params = [P(a.copy()) for a in init]
    opt = getattr(optim, name)(params, **kw)
    for t in range(n_steps):
        set_grads(params, t)
        opt.step()
    return params, opt


def run_ref(name, kw, init, n_steps=N_STEPS):
    ps = [a.copy() for a in init]
    states = [{"t": 0} for _ in ps]
    for t in range(n_steps):
        grads = [grad_at(t, i, p) for i, p in enumerate(ps)]
        for i, g in enumerate(grads):
            if g is not None:
                states[i]["t"] += 1
                ps[i] = REFS[name](ps[i], g, states[i], **kw)
    return ps


def run_torch(torch, name, kw, init, n_steps=N_STEPS):
    ts = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = getattr(torch.optim, name)(ts, **kw)
    for t in range(n_steps):
        for i, x in enumerate(ts):
            g = grad_at(t, i, x.detach().numpy())
            x.grad = None if g is None else torch.from_numpy(g)
        opt.step()
    return [x.detach().numpy() for x in ts]


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_matches_reference_rule(name, kw):
    init = initial()
    params, _ = run_ours(name, kw, init)
    for p, r, a in zip(params, run_ref(name, kw, init), init):
        assert p.data.dtype == np.float64
        assert not np.allclose(p.data, a)  # the parameters did move
        np.testing.assert_allclose(p.data, r, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_matches_torch(name, kw):
    torch = pytest.importorskip("torch")
    init = initial()
    params, _ = run_ours(name, kw, init)
    for p, r in zip(params, run_torch(torch, name, kw, init)):
        np.testing.assert_allclose(p.data, r, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_in_place_float32_and_grads_untouched(name, kw):
    init = initial(np.float32)
    params = [P(a.copy()) for a in init]
    arrays = [p.data for p in params]
    opt = getattr(optim, name)(params, **kw)
    opt.lr = np.float64(opt.lr)  # a schedule may hand back a NumPy float64
    for t in range(N_STEPS):
        set_grads(params, t)
        grads_before = [None if p.grad is None else p.grad.copy() for p in params]
        opt.step()
        for p, g in zip(params, grads_before):
            if g is not None:
                np.testing.assert_array_equal(p.grad, g)
    for p, a, r in zip(params, arrays, run_ref(name, kw, [a.astype(np.float64) for a in init])):
        assert p.data is a and p.data.dtype == np.float32
        np.testing.assert_allclose(p.data, r, rtol=2e-4, atol=2e-5)
    assert all(v.dtype == np.float32 for v in opt.state_dict()["arrays"].values())


ADAMS = [(n, kw) for n, kw in CONFIGS if n in ("Adam", "AdamW")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kw", ADAMS, ids=[i for i, (n, _) in zip(IDS, CONFIGS) if n in ("Adam", "AdamW")])
def test_compiled_adam_gives_numpys_bits(monkeypatch, name, kw, dtype):
    # Large parameters take the one-pass compiled update (kernels/optim.py); it must give
    # exactly what the NumPy update gives, in float32 as in float64.
    rng = np.random.default_rng(3)
    init = [rng.standard_normal((150, 200)).astype(dtype), rng.standard_normal(40_000).astype(dtype)]
    grads = [[(rng.standard_normal(a.shape) * 0.1).astype(dtype) for a in init] for _ in range(5)]

    from seqtool.kernels import optim as kernel

    calls = []
    compiled = kernel.adam_update
    monkeypatch.setattr(kernel, "adam_update", lambda *a: calls.append(1) or compiled(*a))

    def run(fused_min):
        monkeypatch.setattr(optim, "_FUSED_MIN", fused_min)
        params = [P(a.copy()) for a in init]
        opt = getattr(optim, name)(params, **kw)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g + dtype(0.3) * p.data
            opt.step()
        return params, opt.state_dict()["arrays"]

    fused, fused_state = run(16)
    assert len(calls) == 2 * len(grads)  # both parameters, every step, took the compiled update
    plain, plain_state = run(10**12)
    assert len(calls) == 2 * len(grads)
    for a, b, start in zip(fused, plain, init):
        assert not np.array_equal(a.data, start)
        np.testing.assert_array_equal(a.data, b.data)
    for k in plain_state:
        np.testing.assert_array_equal(fused_state[k], plain_state[k])


def _npz_roundtrip(arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_state_dict_resume_is_bit_identical(name, kw, dtype):
    params, opt = run_ours(name, kw, initial(dtype), n_steps=3)
    sd = opt.state_dict()
    saved = {"scalars": json.loads(json.dumps(sd["scalars"], allow_nan=False)),
             "arrays": _npz_roundtrip(sd["arrays"])}
    # a fresh optimizer built with default hyperparameters: loading must restore kw and lr
    resumed = [P(p.data.copy()) for p in params]
    opt2 = getattr(optim, name)(resumed)
    opt2.load_state_dict(saved)
    for v in sd["arrays"].values():
        v[...] = 123.0  # the state dict is a copy, not a view of the live state
    for t in range(3, N_STEPS):
        set_grads(params, t)
        set_grads(resumed, t)
        opt.step()
        opt2.step()
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a.data, b.data)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["scalars"] == s2["scalars"]
    assert s1["arrays"].keys() == s2["arrays"].keys()
    for k in s1["arrays"]:
        np.testing.assert_array_equal(s1["arrays"][k], s2["arrays"][k])


def test_state_dict_layout_and_step_counters():
    params, opt = run_ours("Adam", dict(amsgrad=True), initial())
    sd = opt.state_dict()
    n_skipped = sum(1 for i, _ in NO_GRAD if i == 2)
    assert sd["scalars"]["step.0"] == N_STEPS
    assert sd["scalars"]["step.2"] == N_STEPS - n_skipped
    assert sd["scalars"]["type"] == "Adam" and sd["scalars"]["betas"] == [0.9, 0.999]
    assert set(sd["arrays"]) == {f"{k}.{i}" for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") for i in range(3)}


def test_load_state_dict_rejects_mismatch():
    _, adam = run_ours("Adam", {}, initial(), n_steps=2)
    sd = adam.state_dict()
    with pytest.raises(SeqtoolError):
        optim.SGD([P(a) for a in initial()], lr=0.1).load_state_dict(sd)
    with pytest.raises(SeqtoolError):
        optim.Adam([P(a) for a in initial()[:2]]).load_state_dict(sd)
    wrong = [P(np.zeros(7)) if i == 1 else P(a) for i, a in enumerate(initial())]
    with pytest.raises(SeqtoolError):
        optim.Adam(wrong).load_state_dict(sd)


def test_lr_attribute_is_used_by_step():
    # Halving lr (as a NaN rollback does) must halve a plain SGD step.
    params = [P(np.ones(3)), P(np.ones(2))]
    opt = optim.SGD(params, lr=0.4)
    opt.lr = opt.lr / 2
    for p in params:
        p.grad = np.full(p.data.shape, 2.0)
    opt.step()
    np.testing.assert_allclose(params[0].data, 1.0 - 0.2 * 2.0, rtol=1e-15)


def test_zero_grad():
    params = [P(np.ones(3), np.ones(3)), P(np.ones(2), None)]
    g = params[0].grad
    opt = optim.SGD(params, lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert params[0].grad is g and not g.any() and params[1].grad is None
    opt.zero_grad()
    assert params[0].grad is None


def test_invalid_hyperparameters():
    ps = [P(np.ones(2))]
    with pytest.raises(UsageError):
        optim.Adam(ps, betas=(1.0, 0.999))
    with pytest.raises(UsageError):
        optim.SGD(ps, lr=-1.0)
    with pytest.raises(UsageError):
        optim.SGD(ps, lr=0.1, nesterov=True)
    with pytest.raises(ValueError):
        optim.SGD([], lr=0.1)


# ---- gradient clipping --------------------------------------------------------------------


def _clip_case(dtype=np.float64, scale=1.0):
    rng = np.random.default_rng(7)
    return [P(np.zeros(s, dtype), (scale * rng.standard_normal(s)).astype(dtype)) for s in SHAPES] + [
        P(np.zeros(4, dtype), None)
    ]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm(norm_type, max_norm):
    params = _clip_case()
    grads = [p.grad.copy() for p in params if p.grad is not None]
    flat = np.concatenate([g.ravel() for g in grads])
    expect = np.abs(flat).max() if math.isinf(norm_type) else np.sum(np.abs(flat) ** norm_type) ** (1 / norm_type)
    total = optim.clip_grad_norm(params, max_norm, norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(expect, rel=1e-12)
    coef = min(1.0, max_norm / (expect + 1e-6))
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad, g * coef, rtol=1e-12)
    if max_norm < expect:
        out = np.concatenate([p.grad.ravel() for p in params if p.grad is not None])
        assert np.linalg.norm(out, norm_type) == pytest.approx(max_norm, rel=1e-5)
    assert params[-1].grad is None


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    torch = pytest.importorskip("torch")
    params = _clip_case()
    ts = [torch.zeros(p.data.shape, dtype=torch.float64, requires_grad=True) for p in params]
    for t, p in zip(ts, params):
        t.grad = None if p.grad is None else torch.from_numpy(p.grad.copy())
    expect = float(torch.nn.utils.clip_grad_norm_(ts, max_norm, norm_type))
    assert optim.clip_grad_norm(params, max_norm, norm_type) == pytest.approx(expect, rel=1e-12)
    for t, p in zip(ts, params):
        if p.grad is not None:
            np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_clip_grad_norm_nonfinite_like_torch(bad, norm_type):
    torch = pytest.importorskip("torch")
    params = _clip_case()
    params[1].grad[2] = bad
    ts = [torch.from_numpy(p.grad.copy()) for p in params if p.grad is not None]
    xs = []
    for g in ts:
        x = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        x.grad = g
        xs.append(x)
    expect = float(torch.nn.utils.clip_grad_norm_(xs, 1.0, norm_type))
    total = optim.clip_grad_norm(params, 1.0, norm_type)
    assert (math.isnan(total) and math.isnan(expect)) or total == expect
    for p, x in zip([p for p in params if p.grad is not None], xs):
        np.testing.assert_array_equal(p.grad, x.grad.numpy())


def test_clip_float32_in_place():
    params = _clip_case(np.float32, scale=10.0)
    grads = [p.grad for p in params if p.grad is not None]
    total = optim.clip_grad_norm(params, 1.0)
    assert total > 1.0
    assert all(p.grad is g and g.dtype == np.float32 for p, g in zip(params, grads))
    optim.clip_grad_value(params, 0.1)
    assert all(p.grad is g and g.dtype == np.float32 for p, g in zip(params, grads))


def test_clip_grad_value_matches_torch():
    torch = pytest.importorskip("torch")
    params = _clip_case()
    xs = []
    for p in params:
        x = torch.zeros(p.data.shape, dtype=torch.float64, requires_grad=True)
        x.grad = None if p.grad is None else torch.from_numpy(p.grad.copy())
        xs.append(x)
    before = [None if p.grad is None else p.grad.copy() for p in params]
    torch.nn.utils.clip_grad_value_(xs, 0.7)
    optim.clip_grad_value(params, 0.7)
    for p, x, b in zip(params, xs, before):
        if b is None:
            assert p.grad is None
            continue
        np.testing.assert_array_equal(p.grad, np.minimum(np.maximum(b, -0.7), 0.7))
        np.testing.assert_array_equal(p.grad, x.grad.numpy())


# ---- learning-rate schedules --------------------------------------------------------------


def _torch_opt(torch, lr):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def test_steplr_closed_form():
    opt = optim.SGD([P(np.ones(1))], lr=0.1)
    sched = optim.StepLR(opt, step_size=3, gamma=0.5)
    for epoch in range(1, 11):
        sched.step()
        assert opt.lr == pytest.approx(0.1 * 0.5 ** (epoch // 3), rel=1e-14)


def test_steplr_matches_torch_with_manual_halving():
    torch = pytest.importorskip("torch")
    opt = optim.SGD([P(np.ones(1))], lr=0.1)
    topt = _torch_opt(torch, 0.1)
    sched = optim.StepLR(opt, step_size=3, gamma=0.3)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=3, gamma=0.3)
    for epoch in range(12):
        if epoch == 4:  # a NaN rollback halves lr in both
            opt.lr /= 2
            topt.param_groups[0]["lr"] /= 2
        topt.step()  # no grads: a no-op that keeps torch's call-order check quiet
        sched.step()
        tsched.step()
        assert opt.lr == topt.param_groups[0]["lr"]
        if epoch == 6:
            saved = json.loads(json.dumps(sched.state_dict(), allow_nan=False))
            sched = optim.StepLR(opt, step_size=99, gamma=0.9)
            sched.load_state_dict(saved)


METRICS = [5.0, 4.0, 4.0, 4.0, 4.0, 3.9999, 3.99, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 2.0, 2.5, 2.2, 2.1,
           2.0, 2.0, 2.0, 2.0, 1.9, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, float("nan"), 2.0, 2.0, 2.0]
PLATEAU_CONFIGS = [
    dict(patience=2),
    dict(patience=1, factor=0.5, threshold=0.01, threshold_mode="abs", cooldown=2, min_lr=0.02),
    dict(mode="max", patience=2, factor=0.5, threshold=0.05),
    dict(mode="max", patience=0, factor=0.3, threshold_mode="abs", cooldown=1, min_lr=1e-3),
]


def _plateau_reference(metrics, lr, mode="min", factor=0.1, patience=10, threshold=1e-4,
                       threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
    # the rule from the ReduceLROnPlateau docs, written out independently
    best, bad, cool, lrs = None, 0, 0, []
    for m in metrics:
        if best is None:
            better = not math.isnan(m)
        elif mode == "min":
            better = m < (best * (1 - threshold) if threshold_mode == "rel" else best - threshold)
        else:
            better = m > (best * (1 + threshold) if threshold_mode == "rel" else best + threshold)
        if better:
            best, bad = m, 0
        else:
            bad += 1
        if cool > 0:
            cool, bad = cool - 1, 0
        if bad > patience:
            new = max(lr * factor, min_lr)
            if lr - new > eps:
                lr = new
            cool, bad = cooldown, 0
        lrs.append(lr)
    return lrs


@pytest.mark.parametrize("cfg", PLATEAU_CONFIGS)
def test_plateau_reference_and_resume(cfg):
    metrics = [-m for m in METRICS] if cfg.get("mode") == "max" else METRICS
    expect = _plateau_reference(metrics, 0.1, **cfg)
    assert len(set(expect)) >= 3  # the schedule actually reduced lr more than once
    opt = optim.SGD([P(np.ones(1))], lr=0.1)
    sched = optim.ReduceLROnPlateau(opt, **cfg)
    got = []
    for k, m in enumerate(metrics):
        if k in (0, 11):  # JSON round trip, including the initial infinite "best"
            saved = json.loads(json.dumps(sched.state_dict(), allow_nan=False))
            sched = optim.ReduceLROnPlateau(opt)
            sched.load_state_dict(saved)
        sched.step(m)
        got.append(opt.lr)
    assert got == pytest.approx(expect, rel=1e-14)


@pytest.mark.parametrize("cfg", PLATEAU_CONFIGS)
def test_plateau_matches_torch(cfg):
    torch = pytest.importorskip("torch")
    metrics = [-m for m in METRICS] if cfg.get("mode") == "max" else METRICS
    opt = optim.SGD([P(np.ones(1))], lr=0.1)
    topt = _torch_opt(torch, 0.1)
    sched = optim.ReduceLROnPlateau(opt, **cfg)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **cfg)
    for m in metrics:
        topt.step()
        sched.step(m)
        tsched.step(m)
        assert opt.lr == topt.param_groups[0]["lr"]
        assert sched.num_bad_epochs == tsched.num_bad_epochs


def test_plateau_ignores_reductions_below_eps():
    torch = pytest.importorskip("torch")
    cfg = dict(patience=0, factor=0.5)  # lr 3e-8 -> 1.5e-8, then a step of 7.5e-9 < eps is skipped
    expect = _plateau_reference([1.0] * 5, 3e-8, **cfg)
    opt = optim.SGD([P(np.ones(1))], lr=3e-8)
    topt = _torch_opt(torch, 3e-8)
    sched = optim.ReduceLROnPlateau(opt, **cfg)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **cfg)
    for m, e in zip([1.0] * 5, expect):
        topt.step()
        sched.step(m)
        tsched.step(m)
        assert opt.lr == topt.param_groups[0]["lr"] == e
    assert opt.lr == 1.5e-8


def test_plateau_rejects_factor_one():
    with pytest.raises(UsageError):
        optim.ReduceLROnPlateau(optim.SGD([P(np.ones(1))], lr=0.1), factor=1.0)


# ---- factory ------------------------------------------------------------------------------


TORCH_NAMES = {"sgd": "SGD", "adam": "Adam", "adagrad": "Adagrad", "adadelta": "Adadelta", "rmsprop": "RMSprop"}


@pytest.mark.parametrize("name", sorted(TORCH_NAMES))
def test_make_optimizer_defaults_match_torch(name):
    torch = pytest.importorskip("torch")
    opt = optim.make_optimizer(name.upper() if name == "adam" else name, [P(np.ones(2))])
    tdefaults = getattr(torch.optim, TORCH_NAMES[name])([torch.zeros(1, requires_grad=True)]).defaults
    assert type(opt).__name__ == TORCH_NAMES[name]
    assert opt.lr == tdefaults["lr"]
    for k in opt._hyper:
        assert getattr(opt, k) == (tuple(tdefaults[k]) if k == "betas" else tdefaults[k]), k
    assert optim.make_optimizer(name, [P(np.ones(2))], lr=0.25).lr == 0.25


def test_make_optimizer_unknown_name():
    with pytest.raises(UsageError) as exc:
        optim.make_optimizer("lbfgs", [P(np.ones(2))])
    msg = str(exc.value)
    assert "\n" not in msg and "lbfgs" in msg
    for name in TORCH_NAMES:
        assert name in msg
