"""`hvdkit generate RUN --prompt TEXT`: text sampled from a language-model run (a GPT on byte
tokens, e.g. recipes/gpt_text.yaml), on either framework, without a Horovod job.

    hvdkit generate runs/gpt_text-torch-np2-... --prompt "def main(" --tokens 200

The run's newest good checkpoint is rebuilt as `hvdkit export` does. The prompt's UTF-8
bytes are the first tokens; each next byte is drawn from the softmax of the last position's
logits ÷ `temperature` (0: the most likely byte), seeded by `seed`, so a run, prompt and seed
always give the same text. The context is the last `block_size` tokens, right-padded to
`block_size` (a causal model's position t sees only 0..t, so the padding changes nothing
before it, and every call has the one shape the model was built for).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hvdkit.errors import UserError
from hvdkit.training.export import exporter, load_run

VOCAB = 256
"""Byte tokens: what the prompt is turned into and the samples are read back as."""


def next_token(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """A token drawn from softmax(logits / temperature); the argmax at temperature 0."""
    if temperature == 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    p = np.exp(scaled - scaled.max())
    return int(rng.choice(len(p), p=p / p.sum()))


def generate(run: str | Path, prompt: str, tokens: int = 200, temperature: float = 0.8,
             seed: int = 0) -> str:
    """The prompt and `tokens` bytes sampled after it from `run`'s model, as text."""
    if tokens < 0 or temperature < 0:
        raise UserError("--tokens and --temperature must not be negative")
    if not prompt:
        raise UserError("--prompt must not be empty: it is the text the model continues")
    trained = load_run(run)
    if len(trained.input_shape) != 1 or trained.sample.dtype != np.int64:
        raise UserError(f"{run} is not a language-model run: its model takes inputs of shape "
                        f"{trained.input_shape}, not token sequences")
    if trained.num_classes != VOCAB:
        raise UserError(f"{run}'s vocabulary has {trained.num_classes} tokens; generate reads "
                        f"and writes bytes ({VOCAB} tokens)")
    framework = exporter(trained.framework)
    model = framework.build_model(trained)
    print(f"[hvdkit] sampling from {trained.framework} model of {run} (checkpoint "
          f"{trained.checkpoint.name})", file=sys.stderr, flush=True)
    block = trained.input_shape[0]
    ids = list(prompt.encode())
    rng = np.random.default_rng(seed)
    for _ in range(tokens):
        context = ids[-block:]
        window = np.zeros((1, block), np.int64)
        window[0, :len(context)] = context
        logits = framework.predict(model, window)[0, len(context) - 1]
        ids.append(next_token(logits, temperature, rng))
    return bytes(ids).decode("utf-8", errors="replace")
