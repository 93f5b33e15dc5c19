"""`python -m pivot_jax.data show|stats` on the built-in CLDR CoIT data."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(smollm2_gguf, *args):
    return subprocess.run([sys.executable, "-m", "pivot_jax.data", *args, "--config",
                           str(REPO / "configs" / "coit.py") + ":lang=it,model=smollm2-135m",
                           f"--config.data.tokenizer=gguf:{smollm2_gguf}", "--config.train.seq_len=64"],
                          capture_output=True, text=True, check=True, cwd=REPO)


def test_show_marks_the_loss_tokens(smollm2_gguf):
    out = _run(smollm2_gguf, "show", "--num", "2").stdout
    assert out.startswith("=== pivot_coit_translation_en_it [train]")
    assert out.count("prompt tokens (no loss)") == 2
    assert "### Response:" in out and "[<|im_end|>]" in out  # EOS carries loss


def test_stats_counts_what_seq_len_drops(smollm2_gguf):
    out = _run(smollm2_gguf, "stats").stdout
    row = next(line for line in out.splitlines() if line.startswith("pivot_coit_translation_en_it"))
    examples, over = int(row.split()[1]), int(row.split()[6])
    assert examples > 1000 and 0 < over < examples  # Alpaca prompts alone are ~60 tokens
    assert "dropped" in row and "examples per row" in out
