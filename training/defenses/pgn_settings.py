"""``--defense pgn``'s declaration: the paper's settings (training/defenses/pgn.py says why each default)."""
from __future__ import annotations

import dataclasses

from training.defenses.settings import DefenseSettings, setting

GENERATOR_INPUTS = ("grad", "image", "label")  # = models.generator.GENERATOR_INPUTS (a test checks)


@dataclasses.dataclass(frozen=True)
class PGNSettings(DefenseSettings):
    name = "pgn"
    title = "PGN"
    marker = "o"
    trainer = "training.defenses.pgn:PGNTraining"
    benchmark_variants = ("pgn_update=alternating",)

    c_l: float = setting(50.0, "weight of the generator's ||delta||^2 penalty (eq. 4; Tables 2-3 use 50); "
                         "lower is stronger.", at_least=0.0)
    pgn_grad: str = setting("prob", "G's gradient input is d/dx of F(x)_y (prob, the paper) or of the CE (loss).",
                            choices=("prob", "loss"))
    pgn_update: str = setting("simultaneous", "both updates from one forward pass (the reference code), or "
                              "generator step then classifier step.", choices=("simultaneous", "alternating"))
    pgn_inputs: str = setting(",".join(GENERATOR_INPUTS), "generator inputs (Appendix D ablation: any subset).")
    pgn_classifier_grad: str = setting(
        "fixed", "F's update holds x_adv fixed (first order, default), or its gradient also flows through G's "
        "gradient input (through_input_gradient: the reference code's second-order path, 1.5x the cost).",
        choices=("fixed", "through_input_gradient"))
    pgn_grad_scale: str = setting(
        "batch_mean", "G's gradient input is d/dx of the batch mean (paper, reference; each example's is 1/B of "
        "its own), per_example (without the 1/B) or unit (each example's gradient over its L2 norm).",
        choices=("batch_mean", "per_example", "unit"))
    gen_init: str = setting("glorot_uniform", "the generator's kernel initialiser (Keras's default; the "
                            "reference code's is he_normal).", choices=("glorot_uniform", "he_normal"))

    def check(self) -> None:
        inputs = self.pgn_inputs.split(",")
        if not inputs or set(inputs) - set(GENERATOR_INPUTS) or len(set(inputs)) != len(inputs):
            raise ValueError(f"--pgn_inputs '{self.pgn_inputs}' must be a comma-separated subset of "
                             f"{','.join(GENERATOR_INPUTS)}")
        if self.pgn_classifier_grad == "through_input_gradient" and self.pgn_update != "simultaneous":
            raise ValueError("--pgn_classifier_grad through_input_gradient needs --pgn_update simultaneous "
                             "(the reference code's order, where F's gradient passes through G's input)")


DEFENSES = (PGNSettings,)
