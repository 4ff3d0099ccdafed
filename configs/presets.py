"""Named settings for ``run.py --preset NAME``; flags given on the command line win.

paper  The paper's Table 1: full-width classifier, batch 128, Adam 5e-4, EMA 0.998, 200 epochs,
       all of the training set. ``python run.py --mode train --defense pgd --preset paper``.
cpu    Sized for a 2-core CPU: see docs/training.md (Presets) for what it reaches on the CIFAR-10 copy.
cpu_repro  The CPU-scale reproduction of Tables 2-3 and Figure 5 (studies/cpu.toml,
       docs/results/cifar10-cpu/): 20,000 training images without augmentation, 6 epochs, every
       epoch's EMA classifier kept for benign-accuracy matching, a 500-image test subset.
cpu_full  The second CPU-scale reproduction (studies/cpu_full.toml, docs/results/cifar10-cpu-full/): all 50,000 training
       images with the reference's flip + shift augmentation, Table 1's Adam 5e-4, batch 128 and
       EMA 0.998, in bfloat16 (2-3x faster than float32 on a CPU with AMX), classifier and generator
       both at width 0.5 (G keeps Table 1's size relative to F: about 1.2x its FLOPs), every epoch
       kept for matching, benign accuracy on the whole 10,000-image test split, 20 epochs.
       ``python run.py --mode train --defense none --preset cpu_full --dataset folder:PATH``: on the
       CIFAR-10 JPEG copy 0.754 after 10 epochs, 0.800 after 16, 0.81 after 18 (a 2-core CPU,
       about 40 s an epoch alone; docs/results/cifar10-cpu-full/).
smoke  Seconds, for tests and a first try: a tiny classifier on 2,048 training images (512 test
       images), one epoch.
"""
from __future__ import annotations

PRESETS: dict[str, dict] = {
    "paper": dict(width=1.0, batch_size=128, lr=5e-4, ema_decay=0.998, epochs=200,
                  train_limit=0, test_limit=0),
    "cpu": dict(width=0.25, gen_width=0.25, batch_size=128, epochs=15, train_limit=10000,
                test_limit=2000, monitor_size=512),
    # Chosen on the CIFAR-10 JPEG copy: a clean run reaches 0.555 benign accuracy after 6 epochs of
    # 20k images without augmentation (0.475 after 4 epochs with it); more images for fewer epochs
    # generalise better than the reverse at the same cost, and augmentation only pays off later.
    "cpu_repro": dict(width=0.25, gen_width=0.25, batch_size=128, epochs=6, train_limit=20000,
                      test_limit=500, augment="none", monitor_size=256, keep_checkpoints="all"),
    "cpu_full": dict(width=0.5, gen_width=0.5, batch_size=128, epochs=20, train_limit=0, test_limit=0,
                     augment="flip_shift", precision="mixed_bfloat16", monitor_size=512, keep_checkpoints="all"),
    "smoke": dict(width=0.25, gen_width=0.25, batch_size=64, epochs=1, train_limit=2048,
                  test_limit=512, monitor_size=128, log_every_steps=4),
}
