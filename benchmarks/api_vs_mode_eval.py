"""eval.evaluate_model beside ``run.py --mode eval`` on the same run's model and test images: the
returned shapes, and the standard AutoAttack's numbers at L-inf 8/255 from both routes.

    python run.py --mode eval --run_dir RUN --attacks autoattack --autoattack_norm inf \\
        --autoattack_curve= --test_limit 200 --eval_dir EVAL
    python -m benchmarks.api_vs_mode_eval --run_dir RUN --eval_dir EVAL --test_limit 200

The second command loads the run's averaged classifier and the same test subset as ``--mode eval``
(``--test_limit``), calls ``evaluate_model(model, x, y, norm="inf", eps=8/255)`` (the standard
AutoAttack) and prints each stage's accuracy from both routes and whether the per-example flags
agree. tests/test_api.py checks the same agreement on a tiny run.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--eval_dir", required=True, help="--mode eval's --eval_dir for the same run")
    parser.add_argument("--test_limit", type=int, required=True, help="--mode eval's --test_limit")
    args = parser.parse_args()

    import data
    from eval import evaluate_model
    from eval.runs import load_run

    run = load_run(args.run_dir)
    dataset = data.load_dataset(run.data_config(args.test_limit))
    started = time.perf_counter()
    result = evaluate_model(run.build_classifier(), dataset.test_images, dataset.test_labels, norm="inf",
                            eps=8 / 255, verbose=0)
    seconds = time.perf_counter() - started
    theirs = json.loads((Path(args.eval_dir) / "results.json").read_text())["runs"][run.name]
    x_adv = result.adversarial["autoattack"]
    print(f"x {dataset.test_images.shape} {dataset.test_images.dtype}; adversarial['autoattack'] {x_adv.shape} "
          f"{x_adv.dtype}; robust['autoattack'] {result.robust['autoattack'].shape}; l2['autoattack'] "
          f"{result.l2['autoattack'].shape}; broken_by {result.broken_by.shape}")
    stages, counts = np.unique(result.broken_by, return_counts=True)
    print("broken_by:", {str(s) or "(robust)": int(c) for s, c in zip(stages, counts)})
    print(f"max |x_adv - x|_inf {float(np.abs(x_adv - dataset.test_images / 255.0).max()):.9f} (8/255 = "
          f"{8 / 255:.9f})")
    print(f"evaluate_model ({seconds:.0f} s): clean {result.clean_accuracy}, after {result.autoattack['accuracy_after']}")
    print(f"--mode eval: clean {theirs['benign_accuracy']}, after {theirs['autoattack']['accuracy_after']}")
    print("per-example flags equal:", result.robust["autoattack"].tolist() == theirs["per_example"]["autoattack"])
    print("robustbench:", {k: result.robustbench[k] for k in ("threat_model", "eps", "clean_acc", "autoattack_acc")})


if __name__ == "__main__":
    main()
