"""seqtool.tasks.charlm.sampler and kernels/sample.py against a slow step-by-step reference that feeds one
token at a time through the seqtool.nn layers and samples with plain NumPy."""

import numba
import numpy as np
import pytest

from seqtool import nn
from seqtool.core.autograd import no_grad
from seqtool.errors import SeqtoolError
from seqtool.io.modelfile import save_model
from seqtool.tasks.charlm import load as load_charlm
from seqtool.tasks.charlm.sampler import (_Detokenizer, _kernel_weights, _token_losses_sum, encode,
                                          generate, prime, run_sampler, text_loss)

CHARS = list("abcdefghij klmnop\n.,")


def make_charlm(path, cell="lstm", layers=2, hidden=24, embed=10, tokens=None, unit="char",
                reset_after=True, nonlinearity="tanh", seed=0, head_scale=1.0, head_bias=True):
    """A charlm model file with random weights, built from seqtool.nn modules."""
    tokens = list(CHARS if tokens is None else tokens)
    rng = np.random.default_rng(seed)
    module = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
    rnn = module(embed, hidden, num_layers=layers, nonlinearity=nonlinearity,
                 reset_after=reset_after, rng=rng)
    V = len(tokens)
    arrays = {f"rnn.{k}": v for k, v in rnn.state_dict().items()}
    arrays["embed.weight"] = rng.standard_normal((V, embed)).astype(np.float32)
    arrays["head.weight"] = (head_scale * rng.standard_normal((V, hidden))).astype(np.float32)
    arrays["head.bias"] = (rng.standard_normal(V) * head_bias).astype(np.float32)
    meta = {"task": "charlm",
            "config": {"cell": cell, "hidden": hidden, "layers": layers, "embed": embed,
                       "dropout": 0.0, "reset_after": reset_after,
                       "nonlinearity": nonlinearity, "unit": unit},
            "vocab": {"unit": unit, "tokens": tokens}}
    save_model(path, arrays, meta)
    return path


def _step(model, tok, state):
    """One token through the seqtool.nn layers: returns the new state."""
    x = model.embed[[tok]][None]  # (1, 1, E)
    with no_grad():
        if model.cell == "lstm":
            _, (h, c) = model.rnn(x, state)
            return h.data, c.data
        _, h = model.rnn(x, None if state is None else state[0])
        return h.data, None


def _ref_pick(logits, temperature, top_k, argmax, u):
    if argmax:
        return int(np.argmax(logits))
    lg = logits.astype(np.float64)
    p = np.exp((lg - lg.max()) / temperature)
    if 0 < top_k < len(lg):
        p[lg < np.sort(lg)[-top_k]] = 0.0
    cum = np.cumsum(p)
    return int(min(np.searchsorted(cum, u * cum[-1], side="right"), len(lg) - 1))


def ref_generate(model, prime_text, n, temperature=1.0, top_k=0, argmax=False, uniforms=None):
    state = None
    for tok in encode(model, prime_text):
        state = _step(model, int(tok), state)
    out = []
    for i in range(n):
        h_top = np.zeros(model.hidden, np.float32) if state is None else state[0][-1, 0]
        logits = model.head_w @ h_top + model.head_b
        tok = _ref_pick(logits, temperature, top_k, argmax, None if uniforms is None else uniforms[i])
        out.append(tok)
        state = _step(model, tok, state)
    return out, state


def run_kernel(model, prime_text, n, temperature=1.0, top_k=0, argmax=False, uniforms=None,
               threads=1, blocks=None):
    h, c = prime(model, prime_text)
    out = np.empty(n, np.int64)
    u = np.zeros(n) if uniforms is None else uniforms
    weights = _kernel_weights(model, blocks or threads)
    used = run_sampler(model, weights, h, c, temperature, top_k, argmax, u, out, threads)
    if threads <= numba.get_num_threads():  # the threads ran side by side: no fallback hid them
        assert used == threads
    return out.tolist(), (h, c)


def assert_matches_reference(model, prime_text, n, threads=1, blocks=None, **sampling):
    """The kernel's tokens equal the reference's, and the state it carries matches the layers'
    state after the same tokens; returns the tokens."""
    got, (h, c) = run_kernel(model, prime_text, n, threads=threads, blocks=blocks, **sampling)
    want, (h_ref, c_ref) = ref_generate(model, prime_text, n, **sampling)
    assert got == want
    np.testing.assert_allclose(h, h_ref[:, 0], atol=2e-5)
    if model.cell == "lstm":
        np.testing.assert_allclose(c, c_ref[:, 0], atol=2e-5)
    return got


CONFIGS = [("lstm", True, "tanh"), ("gru", True, "tanh"), ("gru", False, "tanh"),
           ("rnn", True, "tanh"), ("rnn", True, "relu")]


# (threads, blocks of hidden units): one thread; one block each; 24 units in 5 uneven blocks
# (4, 5, 5, 5, 5), two or three per thread.
SPLITS = [(1, 1), (2, 2), (2, 5)]


@pytest.mark.parametrize("threads,blocks", SPLITS)
@pytest.mark.parametrize("cell,reset_after,nonlin", CONFIGS)
def test_argmax_matches_step_by_step_reference(tmp_path, cell, reset_after, nonlin, threads,
                                               blocks):
    m = load_charlm(make_charlm(tmp_path / "m.st", cell, layers=2, reset_after=reset_after,
                                nonlinearity=nonlin, head_scale=3.0))
    assert_matches_reference(m, "abc de", 60, threads, blocks, argmax=True)


@pytest.mark.parametrize("threads,blocks", SPLITS)
@pytest.mark.parametrize("cell,reset_after,nonlin", CONFIGS)
@pytest.mark.parametrize("top_k", [0, 4])
def test_temperature_sampling_matches_reference_with_same_uniforms(tmp_path, cell, reset_after,
                                                                   nonlin, top_k, threads, blocks):
    m = load_charlm(make_charlm(tmp_path / "m.st", cell, layers=3, reset_after=reset_after,
                                nonlinearity=nonlin, seed=3))
    u = np.random.default_rng(7).random(80)
    got = assert_matches_reference(m, "hi", 80, threads, blocks, temperature=0.7, top_k=top_k,
                                   uniforms=u)
    if top_k:  # every pick lies among the top k of its step (checked by the reference too)
        assert len(set(got)) > 1


@pytest.mark.parametrize("threads,blocks", SPLITS)
@pytest.mark.parametrize("cell,reset_after,nonlin", CONFIGS)
def test_one_layer_sampling_matches_reference(tmp_path, cell, reset_after, nonlin, threads,
                                              blocks):
    # With one layer, its recurrent product is made at the start of each token (deeper
    # stacks make it a phase earlier) and the head's partial logits right after its cells.
    m = load_charlm(make_charlm(tmp_path / "m.st", cell, layers=1, reset_after=reset_after,
                                nonlinearity=nonlin, seed=5))
    u = np.random.default_rng(2).random(70)
    assert_matches_reference(m, "ba", 70, threads, blocks, temperature=1.3, uniforms=u)


@pytest.mark.parametrize("cell,reset_after,nonlin", CONFIGS)
def test_blocks_without_units_contribute_nothing(tmp_path, cell, reset_after, nonlin):
    # 5 hidden units in 7 blocks: two blocks own no unit (no rows, no head columns).
    m = load_charlm(make_charlm(tmp_path / "m.st", cell, layers=2, hidden=5,
                                reset_after=reset_after, nonlinearity=nonlin, seed=6))
    u = np.random.default_rng(4).random(40)
    assert_matches_reference(m, "ab", 40, threads=2, blocks=7, uniforms=u)


def test_softmax_weights_match_numpy_exp_of_the_same_argument():
    from seqtool.kernels.sample import softmax_weights

    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(4000) * 60).astype(np.float32)
    p = np.empty(logits.size)
    for temperature in (1e-3, 0.7, 1.0, 5.0):
        softmax_weights(logits, temperature, -np.inf, p)
        x = (logits.astype(np.float64) - logits.max()) * (1.0 / temperature)  # as the kernel
        want = np.exp(x)
        normal = x >= -708
        assert np.all(np.abs(p[normal] - want[normal]) <= 4e-16 * want[normal])
        assert np.all(p[~normal] == 0.0)
        assert p[np.argmax(logits)] == 1.0
    threshold = np.sort(logits)[-10]
    softmax_weights(logits, 1.0, threshold, p)
    assert np.count_nonzero(p) == 10 and np.all(p[logits < threshold] == 0.0)
    softmax_weights(logits, 5e-324, -np.inf, p)  # 1 / temperature overflows
    assert p[np.argmax(logits)] == 1.0 and np.count_nonzero(p) == 1


@pytest.mark.parametrize("cell,reset_after", [("lstm", True), ("gru", False)])
def test_threads_that_cannot_run_side_by_side_fall_back_to_one(tmp_path, monkeypatch, cell,
                                                              reset_after):
    # More blocks than Numba threads: some thread runs two blocks one after the other, so its
    # first block waits at a barrier for the second until the poll limit; the chunk is redone
    # on one thread and gives the same tokens and state.
    from seqtool.tasks.charlm import sampler as sampling

    monkeypatch.setattr(sampling, "_SPIN_LIMIT", 10_000)
    m = load_charlm(make_charlm(tmp_path / "m.st", cell, layers=2, reset_after=reset_after, seed=4))
    u = np.random.default_rng(1).random(50)
    blocks = numba.get_num_threads() + 2
    want, (h1, c1) = run_kernel(m, "ab", 50, uniforms=u, threads=1, blocks=blocks)
    h2, c2 = prime(m, "ab")
    out = np.empty(50, np.int64)
    assert run_sampler(m, _kernel_weights(m, blocks), h2, c2, 1.0, 0, False, u, out, blocks) == 1
    got = out.tolist()
    assert got == want
    np.testing.assert_array_equal(h2, h1)
    np.testing.assert_array_equal(c2, c1)


@pytest.mark.parametrize("cell,reset_after,nonlin", CONFIGS)
def test_large_vocabularies_multiply_embeddings_per_token(tmp_path, monkeypatch, cell,
                                                          reset_after, nonlin):
    # Above _TABLE_BYTES, layer 0 multiplies the token's embedding by W_ih0 at each step
    # instead of reading a precomputed row: same tokens as the reference.
    from seqtool.tasks.charlm import sampler as sampling

    monkeypatch.setattr(sampling, "_TABLE_BYTES", 0)
    m = load_charlm(make_charlm(tmp_path / "m.st", cell, layers=2, head_scale=3.0, seed=2,
                                reset_after=reset_after, nonlinearity=nonlin))
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    assert _kernel_weights(m, 2)[1].shape == (gates * m.hidden, 10)  # W_ih0 is passed
    assert_matches_reference(m, "abc", 60, threads=2, blocks=2, argmax=True)


def test_weights_copied_onto_huge_pages_keep_every_value():
    from seqtool.tasks.charlm.sampler import _HUGE, _on_huge_pages

    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1024, 256)).astype(np.float32), np.zeros((0, 0), np.float32),
              rng.standard_normal((3, 7)).astype(np.float32), np.arange(5, dtype=np.float64)]
    copies = _on_huge_pages(arrays)
    assert copies[0].ctypes.data % _HUGE == 0  # the mapping starts on a 2 MB boundary
    for a, c in zip(arrays, copies):
        assert c.shape == a.shape and c.dtype == a.dtype and c.flags.c_contiguous
        assert c.ctypes.data % 64 == 0
        np.testing.assert_array_equal(c, a)
        assert not np.shares_memory(c, a)
    small = [np.ones(10, np.float32)]
    assert _on_huge_pages(small)[0] is small[0]  # below 1 MB: left where it is


def test_one_layer_and_no_prime_start_from_head_bias(tmp_path):
    m = load_charlm(make_charlm(tmp_path / "m.st", "lstm", layers=1, hidden=16, embed=16))
    got = assert_matches_reference(m, "", 30, argmax=True)
    assert got[0] == int(np.argmax(m.head_b))


def test_seed_determinism_and_chunking(tmp_path):
    m = load_charlm(make_charlm(tmp_path / "m.st", "gru"))
    a = generate(m, 300, seed=5, prime_text="ab")
    assert a.startswith("ab") and len(a) == 302
    assert generate(m, 300, seed=5, prime_text="ab") == a
    assert generate(m, 300, seed=5, prime_text="ab", chunk=7) == a  # --stream chunking
    assert generate(m, 300, seed=6, prime_text="ab") != a
    assert generate(m, 300, seed=5, prime_text="ab", include_prime=False) == a[2:]


def test_prime_state_equals_token_by_token_state(tmp_path):
    m = load_charlm(make_charlm(tmp_path / "m.st", "lstm", layers=2))
    text = "hello. abc\ndef"
    h, c = prime(m, text)
    state = None
    for tok in encode(m, text):
        state = _step(m, int(tok), state)
    np.testing.assert_allclose(h, state[0][:, 0], atol=1e-5)
    np.testing.assert_allclose(c, state[1][:, 0], atol=1e-5)
    h0, c0 = prime(m, "")
    assert not h0.any() and not c0.any()


def test_prime_with_unknown_characters_names_them(tmp_path):
    m = load_charlm(make_charlm(tmp_path / "m.st"))
    with pytest.raises(SeqtoolError, match=r"'X'.*'Z'") as e:
        generate(m, 5, prime_text="abXcZX")
    assert "\n" not in str(e.value)


def test_stop_at_stops_right_after_the_string(tmp_path):
    m = load_charlm(make_charlm(tmp_path / "m.st"))
    full = generate(m, 400, seed=2, include_prime=False)
    stop = full[150:152]
    end = full.find(stop) + len(stop)
    assert generate(m, 400, seed=2, include_prime=False, stop_at=stop) == full[:end]
    assert generate(m, 400, seed=2, include_prime=False, stop_at="no such thing") == full


def test_byte_unit_output_is_always_valid_utf8(tmp_path):
    # large random head weights and no bias: every step emits an arbitrary byte
    m = load_charlm(make_charlm(tmp_path / "m.st", "rnn", layers=1, tokens=list(range(256)),
                                unit="byte", head_scale=4.0, head_bias=False))
    for seed in range(3):
        text = generate(m, 3000, seed=seed, prime_text="é")
        text.encode("utf-8")  # no surrogates: encodable means valid UTF-8 on stdout
        assert text.startswith("é")
        assert "\ufffd" in text  # random bytes are mostly invalid and were replaced
        assert generate(m, 3000, seed=seed, prime_text="é", chunk=1) == text


def test_byte_detokenizer_holds_back_and_replaces(tmp_path):
    m = load_charlm(make_charlm(tmp_path / "m.st", "rnn", layers=1, tokens=list(range(256)),
                                unit="byte"))
    d = _Detokenizer(m, after_prime=False)
    euro = "€".encode()  # 3 bytes
    assert d.feed(np.array([euro[0], euro[1]])) == ""  # incomplete: held back
    assert d.feed(np.array([euro[2], 0x41, 0xFF])) == "€A\ufffd"
    assert d.feed(np.array([euro[0]])) == ""
    assert d.finish() == "\ufffd"  # incomplete tail at the end


def test_word_unit_joins_with_spaces(tmp_path):
    m = load_charlm(make_charlm(tmp_path / "m.st", tokens=["the", "cat", "sat", "\n"],
                                unit="word"))
    text = generate(m, 20, seed=1, prime_text="the cat")
    assert text.startswith("the cat ") and len(text.split(" ")) >= 21
    with pytest.raises(SeqtoolError, match="'dog'"):
        prime(m, "the dog")


def _ref_nll(m, ids):
    total, state = 0.0, None
    for t in range(len(ids) - 1):
        state = _step(m, int(ids[t]), state)
        lg = (m.head_w @ state[0][-1, 0] + m.head_b).astype(np.float64)
        total += np.log(np.exp(lg - lg.max()).sum()) + lg.max() - lg[ids[t + 1]]
    return total


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_text_loss_matches_reference(tmp_path, cell):
    m = load_charlm(make_charlm(tmp_path / "m.st", cell))
    text = "abc def\nghij. klm, nop"
    loss, n = text_loss(m, text)
    assert n == len(text) - 1
    assert loss == pytest.approx(_ref_nll(m, encode(m, text)) / n, rel=1e-5)
    assert np.isnan(text_loss(m, "a")[0]) and text_loss(m, "a")[1] == 0


def test_batched_loss_equals_sum_of_segments(tmp_path):
    m = load_charlm(make_charlm(tmp_path / "m.st", "lstm"))
    ids = np.random.default_rng(0).integers(0, len(CHARS), 45)
    total, n = _token_losses_sum(m, ids, batch=4, window=7, min_segment=10)
    assert n == 44
    S = 11  # 44 predictions in 4 segments of 11: each segment starts from a zero state
    want = sum(_ref_nll(m, ids[j * S:j * S + S + 1]) for j in range(4))
    assert total == pytest.approx(want, rel=1e-5)
