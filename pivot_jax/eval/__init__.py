"""Evaluation of generated outputs: the metrics the x-LLaMA, PLUG and X-Instruction papers report."""
