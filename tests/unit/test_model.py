"""MTPModel structure, head logits against plain HF forwards, from_trunk initialisation, save/load (DESIGN §5)."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

from wmtp.model.checkpoints import CheckpointError, load_model_dir, save_model_dir
from wmtp.model.mtp import MTPModel

import oracles

V = 97


def tiny_model(*args, **kwargs) -> MTPModel:
    return oracles.tiny_model(*args, **kwargs).eval()


def hf_trunk(n_layers=3, d_model=32, seed=0):
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(
        "llama",
        vocab_size=V,
        hidden_size=d_model,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        initializer_range=0.1,
    )
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()


def reference_head_logits(model: MTPModel, k: int, input_ids, attention_mask=None):
    """Head k as a plain HF model: the trunk's shared blocks followed by f_k, then its norm and unembedding."""
    ref = copy.deepcopy(model.trunk)
    layers = ref.get_decoder().layers
    block = copy.deepcopy(model.head_block(k))
    if model.head1_is_trunk_layer:
        layers[-1] = block
    else:
        layers.append(block)
    ref.config.num_hidden_layers = len(layers)
    with torch.no_grad():
        am = None if attention_mask is None else attention_mask.long()
        return ref(input_ids=input_ids, attention_mask=am, use_cache=False).logits


def _ids(seed=0, B=2, T=10):
    return torch.randint(3, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ---- structure -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n_heads", [1, 2, 4])
def test_from_config_structure_head1_trunk_layer(n_heads):
    model = tiny_model(n_heads, head1=True, n_layers=3)
    assert model.n_heads == n_heads
    assert len(model.decoder.layers) == 3
    assert len(model.heads) == n_heads - 1
    assert model.trunk.config.num_hidden_layers == 3
    assert model.head_block(1) is model.decoder.layers[-1]
    assert len(model.shared_blocks()) == 2
    blocks = [model.head_block(k) for k in range(1, n_heads + 1)]
    assert len({id(b) for b in blocks}) == n_heads
    ptrs = [{p.data_ptr() for p in b.parameters()} for b in blocks]
    for i in range(n_heads):
        for j in range(i + 1, n_heads):
            assert not ptrs[i] & ptrs[j], f"heads {i + 1} and {j + 1} share parameter storage"
    # no head block is also a shared trunk block
    shared = {id(b) for b in model.shared_blocks()}
    assert not shared & {id(b) for b in blocks}
    with pytest.raises(IndexError):
        model.head_block(0)
    with pytest.raises(IndexError):
        model.head_block(n_heads + 1)


@pytest.mark.parametrize("n_heads", [1, 3])
def test_from_config_structure_extra_head1(n_heads):
    model = tiny_model(n_heads, head1=False, n_layers=2)
    assert model.n_heads == n_heads
    assert len(model.heads) == n_heads
    assert len(model.decoder.layers) == 2
    assert len(model.shared_blocks()) == 2
    assert model.head_block(1) is model.heads[0]
    assert all(model.head_block(k) is not b for k in range(1, n_heads + 1) for b in model.decoder.layers)
    # the extra blocks hold exactly as many parameters as n_heads trunk blocks
    per_block = sum(p.numel() for p in model.decoder.layers[0].parameters())
    assert model.n_params()["extra_heads"] == n_heads * per_block


def test_forward_shape():
    model = tiny_model(3)
    with torch.no_grad():
        logits = model(_ids())
    assert logits.shape == (2, 10, 3, V) and logits.dtype == torch.float32


def test_head1_logits_equal_trunk_logits():
    model = tiny_model(3, head1=True, n_layers=3, seed=1)
    ids = _ids(1)
    with torch.no_grad():
        ours = model(ids)[:, :, 0]
        hf = model.trunk(input_ids=ids).logits
    torch.testing.assert_close(ours, hf, atol=1e-5, rtol=1e-5)


def test_head1_logits_equal_trunk_logits_with_right_padding():
    model = tiny_model(2, head1=True, n_layers=2, seed=2)
    ids = _ids(2)
    attn = torch.ones(2, 10, dtype=torch.bool)
    attn[1, 6:] = False
    ids[~attn] = 0
    with torch.no_grad():
        ours = model(ids, attn)[:, :, 0]
        hf = model.trunk(input_ids=ids, attention_mask=attn.long()).logits
    torch.testing.assert_close(ours[attn], hf[attn], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head1", [True, False])
def test_every_head_equals_plain_hf_model_with_that_block(head1):
    model = tiny_model(3, head1=head1, n_layers=2, seed=3)
    ids = _ids(3)
    attn = torch.ones(2, 10, dtype=torch.bool)
    attn[0, 7:] = False
    with torch.no_grad():
        logits = model(ids, attn)
    for k in range(1, 4):
        ref = reference_head_logits(model, k, ids, attn)
        torch.testing.assert_close(logits[:, :, k - 1][attn], ref[attn], atol=1e-5, rtol=1e-5)
    # heads differ from each other (distinct random blocks)
    assert (logits[:, :, 0] - logits[:, :, 1]).abs().max() > 1e-3


def test_heads_are_causal():
    """Logits at position t do not depend on tokens after t (for every head)."""
    model = tiny_model(3, seed=4)
    ids = _ids(4)
    ids2 = ids.clone()
    ids2[:, 6:] = (ids2[:, 6:] + 5) % V
    with torch.no_grad():
        a, b = model(ids), model(ids2)
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-6, rtol=1e-6)
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-4


# ---- from_trunk ----------------------------------------------------------------------------------


def test_from_trunk_heads_copy_last_block():
    trunk = hf_trunk(n_layers=3, seed=5)
    last = trunk.get_decoder().layers[-1]
    model = MTPModel.from_trunk(trunk, n_heads=3)
    assert model.n_heads == 3 and len(model.heads) == 2
    assert model.head_block(1) is last
    last_sd = {name: t.clone() for name, t in last.state_dict().items()}
    last_ptrs = {p.data_ptr() for p in last.parameters()}
    seen = set(last_ptrs)
    for head in model.heads:
        sd = head.state_dict()
        assert sd.keys() == last_sd.keys()
        for name, tensor in sd.items():
            assert torch.equal(tensor, last_sd[name]), name
        ptrs = {p.data_ptr() for p in head.parameters()}
        assert not ptrs & seen, "a new head shares storage with the trunk or another head"
        seen |= ptrs
    # distinct storage: changing a head leaves the trunk untouched
    with torch.no_grad():
        next(model.heads[0].parameters()).add_(1.0)
    assert all(torch.equal(t, last.state_dict()[n]) for n, t in last_sd.items())


def test_from_trunk_all_heads_start_as_the_trunk():
    trunk = hf_trunk(n_layers=2, seed=6)
    ids = _ids(6)
    with torch.no_grad():
        hf = trunk(input_ids=ids).logits
        logits = MTPModel.from_trunk(trunk, n_heads=3)(ids)
    for k in range(3):
        torch.testing.assert_close(logits[:, :, k], hf, atol=1e-5, rtol=1e-5)


def test_from_trunk_extra_head1():
    trunk = hf_trunk(n_layers=2, seed=7)
    model = MTPModel.from_trunk(trunk, n_heads=2, head1_is_trunk_layer=False)
    assert model.n_heads == 2 and len(model.heads) == 2
    assert len(model.decoder.layers) == 2
    ids = _ids(7)
    with torch.no_grad():
        logits = model(ids)
    for k in (1, 2):
        torch.testing.assert_close(logits[:, :, k - 1], reference_head_logits(model, k, ids), atol=1e-5, rtol=1e-5)


# ---- save / load ---------------------------------------------------------------------------------


@pytest.mark.parametrize("head1,tie", [(True, True), (False, True), (True, False)])
def test_save_load_roundtrip_identical_logits(tmp_path, head1, tie):
    model = tiny_model(3, head1=head1, seed=8, tie=tie)
    out = save_model_dir(model, tmp_path / "m", tokenizer=None)
    assert (out / "model.safetensors").is_file() and (out / "wmtp_model.json").is_file()
    loaded = load_model_dir(tmp_path / "m").eval()
    assert loaded.n_heads == 3 and loaded.head1_is_trunk_layer == head1
    assert len(loaded.heads) == len(model.heads)
    ids = _ids(8)
    attn = torch.ones(2, 10, dtype=torch.bool)
    attn[1, 5:] = False
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, attn), model(ids, attn), atol=0, rtol=0)
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_save_overwrites_existing_dir(tmp_path):
    save_model_dir(tiny_model(2, seed=9), tmp_path / "m")
    second = tiny_model(2, seed=10)
    save_model_dir(second, tmp_path / "m")
    loaded = load_model_dir(tmp_path / "m").eval()
    ids = _ids(9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), second(ids), atol=0, rtol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary directory left behind


@pytest.fixture
def saved(tmp_path):
    save_model_dir(tiny_model(2, seed=11), tmp_path / "m")
    return tmp_path / "m"


def test_missing_tensor_raises(saved):
    path = saved / "model.safetensors"
    tensors = load_file(str(path))
    dropped = sorted(k for k in tensors if "heads" in k)[0]
    del tensors[dropped]
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as err:
        load_model_dir(saved)
    assert "model.safetensors" in str(err.value)
    assert dropped in str(err.value)


def test_extra_tensor_raises(saved):
    path = saved / "model.safetensors"
    tensors = load_file(str(path))
    tensors["heads.7.bogus.weight"] = torch.zeros(3)
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as err:
        load_model_dir(saved)
    assert "model.safetensors" in str(err.value)
    assert "heads.7.bogus.weight" in str(err.value)


def test_wrong_shape_tensor_raises(saved):
    path = saved / "model.safetensors"
    tensors = load_file(str(path))
    name = sorted(k for k in tensors if k.endswith("norm.weight"))[0]
    tensors[name] = torch.ones(tensors[name].numel() + 1)
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as err:
        load_model_dir(saved)
    assert "model.safetensors" in str(err.value)


@pytest.mark.parametrize("keep", [0.5, 0.99, 10])
def test_truncated_file_raises(saved, keep):
    path = saved / "model.safetensors"
    data = path.read_bytes()
    n = int(len(data) * keep) if keep < 1 else keep
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError) as err:
        load_model_dir(saved)
    assert "model.safetensors" in str(err.value)


def test_missing_weights_file_raises(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(CheckpointError) as err:
        load_model_dir(saved)
    assert "model.safetensors" in str(err.value)


def test_dir_without_meta_raises(saved, tmp_path):
    (saved / "wmtp_model.json").unlink()
    with pytest.raises(CheckpointError) as err:
        load_model_dir(saved)
    assert "wmtp_model.json" in str(err.value)
    with pytest.raises(CheckpointError):
        load_model_dir(tmp_path / "does-not-exist")


def test_corrupt_meta_raises(saved):
    (saved / "wmtp_model.json").write_text("{not json")
    with pytest.raises(CheckpointError) as err:
        load_model_dir(saved)
    assert "wmtp_model.json" in str(err.value)
