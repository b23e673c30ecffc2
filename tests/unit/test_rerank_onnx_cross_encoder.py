"""OnnxCrossEncoderReranker on a small cross-encoder built here: a WordLevel tokenizer.json and
an ONNX graph whose fixed weights score a pair by the words query and passage share.

Graph: one-hot embedding lookup -> per-segment bag of words (query = token type 0, passage =
type 1) -> elementwise product (shared words) -> linear layer with one weight per word -> logits.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from services.rerank.adapters.onnx_cross_encoder import OnnxCrossEncoderReranker, relevance, sigmoid
from services.rerank.errors import ModelNotFound

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
WEIGHTS = {"cat": 2.0, "sat": 1.0, "mat": 0.5, "dog": 3.0, "ran": 0.25, "the": 0.0, "on": 0.0, "a": 0.0}
BIAS = -1.0
VOCAB = {w: i for i, w in enumerate([*SPECIALS, *WEIGHTS])}


def write_tokenizer(path: Path) -> None:
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])],
    )
    tokenizer.save(str(path))


def write_model(path: Path, *, columns: int = 1, index_type: int = TensorProto.INT64) -> None:
    """The shared-word scorer as ONNX; ``columns`` 2 puts -s/2 and +s/2 in (negative, positive)."""
    size = len(VOCAB)
    table = np.eye(size, dtype=np.float32)
    for special in SPECIALS:
        table[VOCAB[special]] = 0.0  # [CLS]/[SEP]/[PAD]/[UNK] never count as shared words
    w = np.array([WEIGHTS.get(word, 0.0) for word in VOCAB], dtype=np.float32)
    if columns == 1:
        linear, bias = w[:, None], np.array([BIAS], np.float32)
    else:
        linear, bias = np.stack([-w / 2, w / 2], axis=1), np.array([-BIAS / 2, BIAS / 2], np.float32)
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(linear.astype(np.float32), "linear"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(np.array([1.0], np.float32), "one"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["onehot"]),  # [B, T, V]
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["token_type_ids"], ["second"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "second"], ["first"]),
        helper.make_node("Mul", ["mask", "first"], ["qmask"]),
        helper.make_node("Mul", ["mask", "second"], ["pmask"]),
        helper.make_node("Unsqueeze", ["qmask", "axis2"], ["qmask3"]),
        helper.make_node("Unsqueeze", ["pmask", "axis2"], ["pmask3"]),
        helper.make_node("Mul", ["onehot", "qmask3"], ["qtok"]),
        helper.make_node("Mul", ["onehot", "pmask3"], ["ptok"]),
        helper.make_node("ReduceSum", ["qtok", "axis1"], ["qbag"], keepdims=0),  # [B, V]
        helper.make_node("ReduceSum", ["ptok", "axis1"], ["pbag"], keepdims=0),
        helper.make_node("Mul", ["qbag", "pbag"], ["shared"]),
        helper.make_node("MatMul", ["shared", "linear"], ["raw"]),
        helper.make_node("Add", ["raw", "bias"], ["logits"]),
    ]
    inputs = [
        helper.make_tensor_value_info(name, index_type, ["batch", "tokens"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", columns])
    graph = helper.make_graph(nodes, "shared_words", inputs, [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def expected(query: str, passage: str) -> float:
    """What the weights imply: sum over words of weight * count in query * count in passage."""
    q, p = re.findall(r"\w+", query.lower()), re.findall(r"\w+", passage.lower())
    return BIAS + sum(WEIGHTS.get(word, 0.0) * q.count(word) * p.count(word) for word in set(q))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    write_tokenizer(tmp_path / "tokenizer.json")
    write_model(tmp_path / "model.onnx")
    return tmp_path


QUERY = "the cat sat"
PASSAGES = ["a dog ran", "the cat ran", "cat sat on the mat", "sat", "cat cat sat dog"]


async def test_orders_passages_as_the_weights_imply(model_dir: Path) -> None:
    rr = OnnxCrossEncoderReranker.load(str(model_dir))
    try:
        scores = await rr.score(QUERY, PASSAGES)
        want = [expected(QUERY, p) for p in PASSAGES]
        np.testing.assert_allclose(scores, want, rtol=1e-6)
        best_two = [PASSAGES[i] for i in np.argsort(scores)[::-1][:2]]
        assert best_two == ["cat cat sat dog", "cat sat on the mat"]
        assert scores[0] == BIAS  # nothing shared
        assert rr.model_name == f"cross-encoder:{model_dir.name}"
        assert await rr.ready()
        assert await rr.score(QUERY, []) == []
    finally:
        await rr.close()


async def test_batches_of_any_size_agree(model_dir: Path) -> None:
    passages = [" ".join(["cat"] * n + ["dog"] * (n % 3)) for n in range(1, 12)]
    one = OnnxCrossEncoderReranker.load(str(model_dir), batch_size=1)
    four = OnnxCrossEncoderReranker.load(str(model_dir), batch_size=4)
    try:
        a = await one.score("cat dog", passages)
        b = await four.score("cat dog", passages)
    finally:
        await one.close()
        await four.close()
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, [expected("cat dog", p) for p in passages], rtol=1e-6)


async def test_pairs_are_truncated_to_max_tokens(model_dir: Path) -> None:
    # [CLS] cat [SEP] + passage + [SEP]: max_tokens=8 leaves the passage 4 tokens
    rr = OnnxCrossEncoderReranker.load(str(model_dir), max_tokens=8)
    try:
        encodings = rr.encode("cat", ["dog dog dog dog dog dog cat", "cat dog dog dog dog dog dog"])
        assert all(len(e.ids) == 8 for e in encodings)
        late, early = await rr.score("cat", ["dog dog dog dog dog dog cat", "cat dog dog dog dog dog dog"])
        assert late == BIAS  # the shared word was cut off
        assert early == BIAS + WEIGHTS["cat"]
    finally:
        await rr.close()


async def test_two_column_logits_and_sigmoid(tmp_path: Path) -> None:
    write_tokenizer(tmp_path / "tokenizer.json")
    write_model(tmp_path / "model.onnx", columns=2, index_type=TensorProto.INT32)
    rr = OnnxCrossEncoderReranker.load(str(tmp_path), sigmoid=True)
    try:
        scores = await rr.score(QUERY, PASSAGES)
    finally:
        await rr.close()
    want = [1 / (1 + math.exp(-expected(QUERY, p))) for p in PASSAGES]
    np.testing.assert_allclose(scores, want, rtol=1e-6)
    assert all(0 < s < 1 for s in scores)


async def test_expired_timeout_raises(model_dir: Path) -> None:
    rr = OnnxCrossEncoderReranker.load(str(model_dir))
    try:
        with pytest.raises(TimeoutError):
            await rr.score(QUERY, PASSAGES, timeout=0)
    finally:
        await rr.close()


async def test_hub_name_resolves_from_the_hub_cache(tmp_path: Path) -> None:
    """A hub name goes through snapshot_download; a cached snapshot (hub layout, with the model
    under onnx/ as hub repos ship it) is found without the network."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--quarry-test--shared-words"
    snapshot = repo / "snapshots" / commit
    (snapshot / "onnx").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    write_tokenizer(snapshot / "tokenizer.json")
    write_model(snapshot / "onnx" / "model.onnx")
    rr = OnnxCrossEncoderReranker.load(
        "quarry-test/shared-words", cache_dir=str(tmp_path / "hub"), local_files_only=True
    )
    try:
        assert rr.model_name == "cross-encoder:quarry-test/shared-words"
        assert await rr.score(QUERY, ["cat sat"]) == [pytest.approx(expected(QUERY, "cat sat"))]
    finally:
        await rr.close()


def test_unresolvable_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="quarry-test/absent"):
        OnnxCrossEncoderReranker.load("quarry-test/absent", cache_dir=str(tmp_path), local_files_only=True)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelNotFound, match=r"lacks model\.onnx"):
        OnnxCrossEncoderReranker.load(str(tmp_path))


def test_relevance_columns_and_sigmoid() -> None:
    assert relevance(np.array([[1.5], [-2.0]])).tolist() == [1.5, -2.0]
    assert relevance(np.array([[0.5, 2.0]])).tolist() == [1.5]
    with pytest.raises(Exception, match="shape"):
        relevance(np.zeros((2, 3)))
    assert sigmoid(0.0) == 0.5 and sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0
