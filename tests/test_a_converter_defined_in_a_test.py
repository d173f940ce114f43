"""A third converter, defined entirely in this file through the public API, runs the whole generic session.

The "original" here is a tiny encoder-decoder in the layout of openai-whisper's ``model.py`` (conv front end,
pre-norm blocks, a decoder with cross-attention whose logits reuse the token embedding), with two of the
things real checkpoints do: a fused q/k/v projection (k without bias, as in Whisper) and MLP weights stored
transposed (``x @ w``). It converts to transformers' ``WhisperForConditionalGeneration``: an encoder and a
decoder of different depths (placeholders ``{e}`` and ``{d}``), the fused projection split, the transposed
weights turned back, ``proj_out`` declared tied to the token embedding. Registered with
``registry.registered``, it passes every test of the converter contract (refusals, reload, equivalence, the
locator, the JUnit report, atomic output), and the locator names the first decoder block when the decoder's
self-attention q and k are swapped, the encoder's agreeing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import WhisperConfig, WhisperForConditionalGeneration

from converters import registry
from converters.contract import Comparison, Conversion, Converter, Option, Role, Source, Target
from converters.hub_layout import load_serialized, serialized_state
from converters.locator import Stage, Tap, locate
from converters.mapping import Chunk, KeyMapping, Rename, Rule, Split, Tie, Transpose
from converters.randomize import randomize_
from converters.safe_load import as_state_dict
from fixtures.commands import final_message
from fixtures.contract_tests import ConverterContract, ReportingContract, WritingContract, example_options, run

MELS, WIDTH, HEADS, FRAMES, TOKENS, VOCAB = 4, 16, 2, 8, 5, 11
ENCODER_LAYERS, DECODER_LAYERS = 3, 2


class Attention(nn.Module):
    """openai-whisper's MultiHeadAttention with q, k, v fused into one projection (k has no bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(WIDTH))
        self.v_bias = nn.Parameter(torch.zeros(WIDTH))
        self.out = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor, xa: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        wq, wk, wv = self.qkv.weight.chunk(3)
        source = x if xa is None else xa
        q, k, v = x @ wq.T + self.q_bias, source @ wk.T, source @ wv.T + self.v_bias
        split = lambda t: t.view(*t.shape[:2], HEADS, -1).permute(0, 2, 1, 3)  # noqa: E731
        scale = (WIDTH // HEADS) ** -0.25
        scores = (split(q) * scale) @ (split(k) * scale).transpose(-1, -2)
        if causal:
            scores = scores + torch.full(scores.shape[-2:], -math.inf).triu(1)
        weights = scores.softmax(-1)
        return self.out((weights @ split(v)).permute(0, 2, 1, 3).flatten(2))


class MLP(nn.Module):
    """Weights stored (in, out): the block computes ``x @ w1`` (a layout the mapping must transpose)."""

    def __init__(self) -> None:
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.zeros(WIDTH, 2 * WIDTH)), nn.Parameter(torch.zeros(2 * WIDTH))
        self.w2, self.b2 = nn.Parameter(torch.zeros(2 * WIDTH, WIDTH)), nn.Parameter(torch.zeros(WIDTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(x @ self.w1 + self.b1) @ self.w2 + self.b2


class Block(nn.Module):
    def __init__(self, cross: bool) -> None:
        super().__init__()
        self.attn_ln, self.attn = nn.LayerNorm(WIDTH), Attention()
        self.cross_attn_ln: nn.LayerNorm | None = nn.LayerNorm(WIDTH) if cross else None
        self.cross_attn: Attention | None = Attention() if cross else None
        self.mlp_ln, self.mlp = nn.LayerNorm(WIDTH), MLP()

    def forward(self, x: torch.Tensor, xa: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x), causal=self.cross_attn is not None)
        if self.cross_attn is not None and self.cross_attn_ln is not None:
            x = x + self.cross_attn(self.cross_attn_ln(x), xa)
        return x + self.mlp(self.mlp_ln(x))


class Logits(nn.Module):
    """The decoder's output against the token embedding (openai-whisper's ``x @ token_embedding.weight.T``)."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        self.embedding = [embedding]  # not a submodule: the weight belongs to the decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.embedding[0].weight.T


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(MELS, WIDTH, 3, padding=1)
        self.conv2 = nn.Conv1d(WIDTH, WIDTH, 3, stride=2, padding=1)
        self.positional_embedding = nn.Parameter(torch.zeros(FRAMES // 2, WIDTH))
        self.blocks = nn.ModuleList(Block(cross=False) for _ in range(ENCODER_LAYERS))
        self.ln_post = nn.LayerNorm(WIDTH)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.conv2(nn.functional.gelu(self.conv1(mel)))).permute(0, 2, 1)
        x = x + self.positional_embedding
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB, WIDTH)
        self.positional_embedding = nn.Parameter(torch.zeros(TOKENS, WIDTH))
        self.blocks = nn.ModuleList(Block(cross=True) for _ in range(DECODER_LAYERS))
        self.ln = nn.LayerNorm(WIDTH)

    def forward(self, tokens: torch.Tensor, xa: torch.Tensor) -> torch.Tensor:
        y = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[-1]]
        for block in self.blocks:
            y = block(y, xa)
        return self.ln(y)


class Original(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder = Encoder(), Decoder()
        self.logits = Logits(self.decoder.token_embedding)

    def forward(self, mel: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.logits(self.decoder(tokens, self.encoder(mel)))


def attention(source: str, target: str) -> tuple[Rule, ...]:
    return (
        Split(f"{source}.qkv.weight", tuple(f"{target}.{p}_proj.weight" for p in "qkv")),
        Rename(f"{source}.q_bias", f"{target}.q_proj.bias"),
        Rename(f"{source}.v_bias", f"{target}.v_proj.bias"),
        *(Rename(f"{source}.out.{p}", f"{target}.out_proj.{p}") for p in ("weight", "bias")),
    )


def block(source: str, target: str, cross: bool) -> tuple[Rule, ...]:
    norms = [("attn_ln", "self_attn_layer_norm"), ("mlp_ln", "final_layer_norm")]
    norms += [("cross_attn_ln", "encoder_attn_layer_norm")] if cross else []
    return (
        *attention(f"{source}.attn", f"{target}.self_attn"),
        *(attention(f"{source}.cross_attn", f"{target}.encoder_attn") if cross else ()),
        *(Rename(f"{source}.{a}.{p}", f"{target}.{b}.{p}") for a, b in norms for p in ("weight", "bias")),
        Rename(f"{source}.mlp.w1", f"{target}.fc1.weight", Transpose()),
        Rename(f"{source}.mlp.b1", f"{target}.fc1.bias"),
        Rename(f"{source}.mlp.w2", f"{target}.fc2.weight", Transpose()),
        Rename(f"{source}.mlp.b2", f"{target}.fc2.bias"),
    )


MAPPING = KeyMapping(
    (
        *(Rename(f"encoder.{c}.{p}", f"model.encoder.{c}.{p}") for c in ("conv1", "conv2") for p in ("weight", "bias")),
        Rename("encoder.positional_embedding", "model.encoder.embed_positions.weight"),
        *block("encoder.blocks.{e}", "model.encoder.layers.{e}", cross=False),
        *(Rename(f"encoder.ln_post.{p}", f"model.encoder.layer_norm.{p}") for p in ("weight", "bias")),
        Rename("decoder.token_embedding.weight", "model.decoder.embed_tokens.weight"),
        Rename("decoder.positional_embedding", "model.decoder.embed_positions.weight"),
        *block("decoder.blocks.{d}", "model.decoder.layers.{d}", cross=True),
        *(Rename(f"decoder.ln.{p}", f"model.decoder.layer_norm.{p}") for p in ("weight", "bias")),
    ),
    ties=(Tie("proj_out.weight", "model.decoder.embed_tokens.weight"),),
)


def target_config(encoder_layers: int, decoder_layers: int) -> WhisperConfig:
    sizes: dict[str, Any] = {
        "encoder_layers": encoder_layers, "decoder_layers": decoder_layers, "encoder_attention_heads": HEADS,
        "decoder_attention_heads": HEADS, "encoder_ffn_dim": 2 * WIDTH, "decoder_ffn_dim": 2 * WIDTH,
        "max_source_positions": FRAMES // 2, "max_target_positions": TOKENS,
    }  # fmt: skip
    tokens: dict[str, Any] = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 1}
    return WhisperConfig(
        vocab_size=VOCAB, num_mel_bins=MELS, d_model=WIDTH, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, architectures=["WhisperForConditionalGeneration"], **sizes, **tokens,
    )  # fmt: skip


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(1, MELS, FRAMES, generator=generator), torch.tensor([[1, 4, 9, 3, 7]])


def stages(original: Original, converted: Any) -> list[Stage]:
    encoder, decoder = converted.model.encoder, converted.model.decoder
    return [
        Stage("encoder convolutions", Tap(original.encoder.conv2), Tap(encoder.conv2)),
        *(Stage(f"encoder block {n}", Tap(a), Tap(b)) for n, (a, b) in enumerate(zip(original.encoder.blocks,
                                                                                     encoder.layers, strict=True))),
        Stage("encoder final norm", Tap(original.encoder.ln_post), Tap(encoder.layer_norm)),
        *(Stage(f"decoder block {n}", Tap(a), Tap(b)) for n, (a, b) in enumerate(zip(original.decoder.blocks,
                                                                                     decoder.layers, strict=True))),
        Stage("decoder final norm", Tap(original.decoder.ln), Tap(decoder.layer_norm)),
        Stage("logits", Tap(original.logits), Tap(converted.proj_out)),
    ]  # fmt: skip


class ToyConversion(Conversion):
    def read(self) -> Source:
        return Source(as_state_dict(self.loader.load(self.source_path), self.where))

    def target(self, source: Source) -> Target:
        depths = MAPPING.depths(source.tensors)
        config = target_config(depths.get("e", 0), depths.get("d", 0))
        with torch.device("meta"):
            spec = serialized_state(WhisperForConditionalGeneration(config))
        return Target(WhisperForConditionalGeneration, config, spec, "the toy encoder-decoder")

    def mapping(self, source: Source, target: Target) -> KeyMapping:
        return MAPPING

    def write(
        self, source: Source, target: Target, tensors: dict[str, torch.Tensor], directory: Path
    ) -> dict[str, torch.Tensor]:
        model: Any = load_serialized(WhisperForConditionalGeneration(target.config), dict(tensors))
        model.save_pretrained(directory)
        return serialized_state(model)

    @torch.no_grad()
    def reference(self, source: Source, target: Target) -> Original:
        original = Original()
        original.load_state_dict(source.tensors, strict=True)
        return original.eval()

    @torch.no_grad()
    def compare(self, model: Any, reference: Original, target: Target) -> Comparison:
        mel, tokens = inputs()
        expected = reference(mel, tokens)
        got = model(input_features=mel, decoder_input_ids=tokens, use_cache=False).logits
        difference = (got - expected).abs().max().item()
        if difference <= 1e-5 and not self.wants_stages:
            return Comparison(difference, 1e-5, None)

        def both() -> None:
            reference(mel, tokens)
            model(input_features=mel, decoder_input_ids=tokens, use_cache=False)

        divergence = locate(stages(reference, model), both, atol=1e-5)
        cause = "" if difference <= 1e-5 else f"logits differ by {difference:.3g}; {divergence.summary()}"
        return Comparison(difference, 1e-5, divergence, cause)


class ToyExample:
    sizes: tuple[str, ...] = ("tiny",)

    def build(self, directory: Path, size: str = "tiny") -> dict[str, Any]:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "toy.pt"
        torch.save(randomize_(Original(), seed=11).state_dict(), path)
        return {"checkpoint_path": path}

    def rewrite(self, source: Path, destination: Path, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        torch.save(change(dict(torch.load(source, weights_only=True))), destination)


TOY = Converter(
    name="toy-whisper",
    command="convert-toy-whisper-checkpoint",
    description="Convert a toy encoder-decoder checkpoint to WhisperForConditionalGeneration.",
    options=(
        Option("--checkpoint_path", "the toy's state dict", Role.SOURCE, required=True),
        Option("--output", "output directory", Role.OUTPUT, required=True),
    ),
    conversion=ToyConversion,
    files=frozenset({"config.json", "generation_config.json", "model.safetensors"}),
    example=ToyExample(),
)


@pytest.fixture(scope="module")
def toy() -> Iterator[Converter]:
    with registry.registered(TOY) as converter:
        yield converter


class TestAConverterDefinedInATest(ConverterContract, WritingContract, ReportingContract):
    @pytest.fixture
    def converter(self, toy: Converter) -> Converter:
        return toy


def test_it_is_registered_beside_the_built_in_ones(toy: Converter) -> None:
    assert registry.get("toy-whisper") is toy and {"ast", "s3prl", "toy-whisper"} <= set(registry.names())


def test_its_mapping_lists_two_depths_and_the_tied_target() -> None:
    state = Original().state_dict()
    assert MAPPING.depths(state) == {"e": ENCODER_LAYERS, "d": DECODER_LAYERS}
    with torch.device("meta"):
        spec = serialized_state(WhisperForConditionalGeneration(target_config(ENCODER_LAYERS, DECODER_LAYERS)))
    assert set(MAPPING.target_keys({"e": ENCODER_LAYERS, "d": DECODER_LAYERS})) == set(spec)
    assert MAPPING.tied_keys({"e": 3, "d": 2}) == {"proj_out.weight"}
    assert MAPPING.inverse().apply(MAPPING.apply(state)).keys() == state.keys()


def query_and_key_swapped_in(layer: str) -> KeyMapping:
    def swap(rule: Rule) -> Rule:
        fused = any(isinstance(op, Chunk) for op in rule.ops) and rule.sources[0].startswith(layer)
        return replace(rule, targets=(rule.targets[1], rule.targets[0], rule.targets[2])) if fused else rule

    return replace(MAPPING, rules=tuple(swap(rule) for rule in MAPPING.rules))


def test_the_locator_names_the_first_decoder_block_when_the_decoders_query_and_key_are_swapped(
    toy: Converter, artifacts: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule over every decoder block's self-attention is broken; every encoder stage still agrees."""
    layer = "decoder.blocks.{d}.attn"
    broken = query_and_key_swapped_in(layer)
    monkeypatch.setattr(ToyConversion, "mapping", lambda self, source, target: broken)
    output = tmp_path / "out"
    result = run(toy, example_options(toy, artifacts), output)
    assert result.returncode == 1, result.stdout[-3000:]
    last = final_message(result.stderr)
    assert "first divergence at decoder block 0" in last, last
    assert "encoder block 2" in result.stdout and "<- first divergence" in result.stdout
    assert not output.exists()
