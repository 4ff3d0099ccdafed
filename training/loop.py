"""The one training loop every defense shares.

Per batch it runs the defense's compiled step and updates the weight average (EMA); per epoch
it measures the EMA classifier's benign test accuracy and its accuracy under the defense's own
training attack on a fixed test subset, writes an image grid, saves a checkpoint and exports the
averaged weights (and, with ``--keep_checkpoints``, keeps that epoch's). A run directory started
again resumes from its last checkpoint at the exact batch it stopped at: the epoch's batch order
and augmentation depend only on (seed, epoch), random starts only on (seed, step), and the step,
EMA and optimizer states are in the checkpoint, so the resumed run ends with the same weights as
an uninterrupted one. Under a ``tf.distribute`` strategy (``training/distribute.py``) the same
loop runs the step on every replica.
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import data
from models import build_classifier
from models.classifier import MIN_USEFUL_FILTERS, min_filters as classifier_min_filters
from training import checkpoints, distribute, precision, rundir, writes
from training.lock import hold as hold_lock
from training.config import DefenseConfig, RunConfig, TrainConfig, keeps_epoch
from training.defenses import defense_class, make_defense
from training.ema import WeightEMA
from training.monitor import MetricWindow, RunLog, is_finite
from training.rundir import CHECKPOINTS_DIR, EMA_WEIGHTS_FILE, EPOCHS_DIR, epoch_weights_name  # noqa: F401 (re-exported)

_GRID_EXAMPLES = 8
_MONITOR_DRAWS = 512  # the per-epoch attack numbers its random draws from here
PER_EXAMPLE_METRICS = ("delta_l2",)  # gathered over replicas (for the median); the rest averaged


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the message says what was kept."""


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    step: int
    total_steps: int
    epoch_records: list[dict]
    train_step_traces: int
    finished_early: bool = False  # --stop_at_benign: stopped once the benign accuracy was reached

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps or self.finished_early


def train(data_cfg: data.DataConfig, train_cfg: TrainConfig, defense_cfg: DefenseConfig,
          run_cfg: RunConfig, flags: dict | None = None, say=print, classifier: keras.Model | None = None,
          dataset: data.Dataset | None = None, progress: bool = True) -> TrainResult:
    """Trains (or resumes) one run; raises ValueError subclasses for bad input before writing.

    ``classifier``: a user's Keras model to train instead of Table 1's (copied: the model given is
    not changed; ``train_cfg.width`` then means nothing); ``dataset``: data already in memory
    instead of loading ``data_cfg.dataset`` (training/api.py builds both for ``train_model``);
    ``progress``: Keras's progress bar on stdout each epoch (``say`` gets every other line)."""
    for cfg in (train_cfg, defense_cfg, run_cfg):
        cfg.validate()
    defense_cfg = defense_cfg.resolved()  # the radius the run records and trains with
    narrowest = classifier_min_filters(train_cfg.width)
    if classifier is None and narrowest < MIN_USEFUL_FILTERS:
        say(f"warning: --width {train_cfg.width:g} leaves the classifier's first layer {narrowest} filter(s) "
            f"(64 x {train_cfg.width:g}); below about {MIN_USEFUL_FILTERS} a layer learns little and the run may stay "
            f"near chance (--width 0.125 gives 8, the CPU presets use 0.25-0.5)")
    defense_cls = defense_class(defense_cfg.defense)
    run_dir = Path(run_cfg.run_dir or rundir.default_run_dir(
        data_cfg.dataset, defense_cls.run_name(defense_cfg), train_cfg.width, train_cfg.seed))
    settings = rundir.flatten_settings(data=data_cfg, train=train_cfg, defense=defense_cfg)
    if classifier is not None:  # a user's model: a run resumed with another one is refused
        settings["model.classifier"] = f"{classifier.name}, {classifier.count_params()} parameters"
    strategy = distribute.make_strategy(run_cfg.strategy, run_cfg.cpu_replicas)  # first: it may split the CPU
    distribute.check_batch_split(train_cfg.batch_size, strategy)
    chief = distribute.is_chief(strategy)
    if chief:  # what can be refused without the lock, before it creates the directory; a read-only
        # place fails now, not after an epoch
        if run_dir.exists() and not run_dir.is_dir():
            raise rundir.RunDirError(f"--run_dir {run_dir} is a file, not a directory: choose another --run_dir")
        rundir.check_writable(run_dir, run_dir.is_dir())
    with contextlib.ExitStack() as held:
        if chief:  # one writer per run directory: a second process is refused before it reads anything
            held.enter_context(hold_lock(run_dir, f"--run_dir {run_dir}", _LOCKED_FIX))
        return _train_locked(data_cfg, train_cfg, defense_cfg, run_cfg, flags, say, run_dir, settings, strategy,
                             chief, held, classifier, dataset, progress)


_DISK_HINT = "free space and give the same command: training resumes from its last checkpoint"
_LOCKED_FIX = "wait for it to finish or stop it (a lock left by a process that died is released by itself)"


def _train_locked(data_cfg, train_cfg, defense_cfg, run_cfg, flags, say, run_dir, settings, strategy, chief, held,
                  classifier=None, dataset=None, progress=True):
    if chief:
        resuming = rundir.check_run_dir(run_dir, settings, run_cfg.overwrite, rundir.setting_defaults(
            data=data_cfg, train=train_cfg, defense=defense_cfg))
    else:  # the chief checks and creates the run directory; the others resume what it saved
        resuming = (run_dir / CHECKPOINTS_DIR).exists()
    dataset = dataset if dataset is not None else data.load_dataset(data_cfg)
    steps_per_epoch = data.steps_per_epoch(len(dataset.train_labels), train_cfg.batch_size)

    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(train_cfg.precision)
    try:
        if chief and train_cfg.precision == "mixed_bfloat16":
            precision.note_bfloat16_speed(say)
        session = _Session(dataset, data_cfg, train_cfg, defense_cfg, run_cfg, run_dir, steps_per_epoch, strategy,
                           classifier)
        if resuming:
            session.restore(say)
            if chief:
                for key, (old, new) in rundir.record_resumed_settings(run_dir, settings).items():
                    say(f"{run_dir}: {key} was {old}, now {new} (recorded in {rundir.CONFIG_FILE})")
        elif chief:
            record = rundir.run_record(flags or {}, settings, dataset.info())
            moved_to = rundir.create_run_dir(run_dir, record, run_cfg.overwrite)
            if moved_to:  # the lock went with the old directory: take the new one's
                held.enter_context(hold_lock(run_dir, f"--run_dir {run_dir}", _LOCKED_FIX))
                say(f"moved the previous contents of {run_dir} to {moved_to}")
        if chief:  # a checkpoint that cannot be written fails now, in one line, not after an epoch
            writes.require_space(run_dir, session.checkpoint_bytes() + session.ema_bytes(), "a checkpoint",
                                 _DISK_HINT)
        return session.run(say, progress)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def compiled_train_step(defense, ema: WeightEMA, step: tf.Variable, strategy: tf.distribute.Strategy | None = None):
    """The whole per-batch work as one tf.function: the defense's step on every replica's slice
    of the batch (``strategy.run``), the metrics averaged over replicas, the EMA, the counter."""
    strategy = strategy or tf.distribute.get_strategy()

    def replica_step(x, y):
        return {k: tf.cast(v, tf.float32) if k in PER_EXAMPLE_METRICS else tf.reduce_mean(tf.cast(v, tf.float32))
                for k, v in defense.train_step(x, y).items()}

    def train_step(x, y):
        if hasattr(defense.rng, "begin"):
            defense.rng.begin()  # number this trace's random draws from 0
        per_replica = strategy.run(replica_step, args=(x, y))
        metrics = {k: strategy.gather(v, axis=0) if k in PER_EXAMPLE_METRICS
                   else strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}
        ema.update()
        step.assign_add(1)
        return metrics
    return tf.function(train_step)


class _Session:
    """The state of one training process: networks, EMA, checkpoint, compiled functions."""

    def __init__(self, dataset, data_cfg, train_cfg, defense_cfg, run_cfg, run_dir, steps_per_epoch, strategy,
                 template: keras.Model | None = None):
        self.dataset, self.train_cfg, self.run_cfg = dataset, train_cfg, run_cfg
        self.run_dir = run_dir
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * train_cfg.epochs
        self.augment = data.resolve_augment(data_cfg.augment, dataset.name)
        self.strategy, self.chief = strategy, distribute.is_chief(strategy)

        keras.utils.set_random_seed(train_cfg.seed)
        with strategy.scope():  # every variable: networks, optimizer slots, EMA shadows, step
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.noise = distribute.ReplicaNoise(train_cfg.seed, self.step)
            if template is None:
                classifier = build_classifier(dataset.num_classes, dataset.image_shape, train_cfg.width)
            else:  # a copy with the user's initial weights, so that the model given stays as it was
                classifier = keras.models.clone_model(template)
                classifier.set_weights(template.get_weights())
            self.defense = make_defense(classifier, defense_cfg, train_cfg, self.noise)
            self.defense.build()
            self.ema = WeightEMA(self.defense.networks, train_cfg.ema_decay, train_cfg.ema_warmup)
        trackables = {"step": self.step, "ema_updates": self.ema.num_updates}
        for name, network in self.defense.networks.items():
            trackables[name] = network
            trackables[f"ema_{name}"] = self.ema.shadows[name]
            trackables[f"optimizer_{name}"] = self.defense.optimizers[name]
        self.checkpoint = tf.train.Checkpoint(**trackables)
        # A non-chief worker saves (saving may need every worker) into a folder of its own.
        self.checkpoint_dir = run_dir / CHECKPOINTS_DIR if self.chief else \
            run_dir / f"workertemp_{distribute.task_id(strategy)}" / CHECKPOINTS_DIR

        # A fixed, class-mixed test subset for the per-epoch attack (the test split may be
        # ordered by class): the same examples every epoch and in every run of this dataset.
        picks = np.random.default_rng(0).permutation(len(dataset.test_labels))[:run_cfg.monitor_size]
        self.monitor_x = dataset.test_images[np.sort(picks)].astype(np.float32) / 255.0
        self.monitor_y = dataset.test_labels[np.sort(picks)]

        self.train_step = compiled_train_step(self.defense, self.ema, self.step, strategy)
        ema_classifier = self.ema.shadows["classifier"]
        self.ema_logits = tf.function(lambda x: ema_classifier(x, training=False))
        self.ema_attack = tf.function(self._ema_attack)
        self.ema_monitor = tf.function(lambda x, y, x_adv: self.defense.monitor(self.ema.shadows, x, y, x_adv))

    def _ema_attack(self, x, y):
        self.noise.begin(first_draw=_MONITOR_DRAWS)  # apart from the train step's draws
        return self.defense.perturb(self.ema.shadows, x, y)

    def restore(self, say) -> None:
        """Restores the newest readable checkpoint; newer unreadable ones are set aside, each said
        in one line (the chief's job: other workers read what the chief left)."""
        folder = self.run_dir / CHECKPOINTS_DIR
        skipped = []
        if not self.chief:
            latest = tf.train.latest_checkpoint(str(folder))
        else:
            latest, skipped = checkpoints.newest_readable(folder, say)
            if folder.is_dir():
                checkpoints.rewrite_index(folder)  # the manager's index lists what is there, no more
        if latest is None:
            why = (f"no checkpoint in {folder} is readable" if skipped else f"{self.run_dir} has no checkpoint yet")
            say(f"{why}: starting from step 0")
            return
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except Exception as err:  # readable, but not this run's networks (a foreign or older layout)
            raise rundir.RunDirError(
                f"checkpoint {latest} does not fit this run ({type(err).__name__}): move it out of "
                f"{self.checkpoint_dir} to resume from an earlier one, or --overwrite to start over"
            ) from None
        say(f"resuming {self.run_dir} from step {int(self.step.numpy())}"
            + (f" ({Path(latest).name}, the newest readable checkpoint)" if skipped else ""))

    def checkpoint_bytes(self) -> int:
        """What the next checkpoint needs on disk: the last one's size, else its variables' bytes."""
        found = checkpoints.candidates(self.checkpoint_dir)
        if found:
            return sum(f.stat().st_size for f in self.checkpoint_dir.glob(Path(found[0][1]).name + ".*"))
        variables = [v for network in self.defense.networks.values() for v in network.weights]
        variables += [v for shadow in self.ema.shadows.values() for v in shadow.weights]
        variables += [v for optimizer in self.defense.optimizers.values() for v in optimizer.variables]
        return int(sum(np.prod(v.shape) * tf.as_dtype(v.dtype).size for v in variables) * 1.1) + 100_000

    def ema_bytes(self) -> int:
        path = self.run_dir / EMA_WEIGHTS_FILE
        if path.exists():
            return path.stat().st_size
        return int(sum(np.prod(v.shape) * 4 for v in self.ema.shadows["classifier"].weights) * 1.1) + 100_000

    def run(self, say, show_progress: bool = True) -> TrainResult:
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.checkpoint_dir),
                                                  max_to_keep=self.run_cfg.max_checkpoints if self.chief else 1)
        start_step = int(self.step.numpy())
        log = RunLog(self.run_dir if self.chief else None, resume_at=start_step)
        log.event(start_step, "start", {"resumed": start_step > 0, "total_steps": self.total_steps})
        epoch_records = []
        event = rundir.finished_event(self.run_dir, self.train_cfg.epochs)
        # Finished early before, at an accuracy that reaches this --stop_at_benign: nothing to train.
        already = bool(event and event.get("early")) and rundir.is_finished(
            self.run_dir, self.train_cfg.epochs, self.run_cfg.stop_at_benign)
        early = already
        try:
            if already:
                say(f"{self.run_dir} finished early at a benign accuracy that reaches --stop_at_benign "
                    f"{self.run_cfg.stop_at_benign:g}: nothing to train (without the flag it trains on to its end)")
            else:
                recovered = self._recover_epoch_end(log, say)
                epoch_records = [recovered] if recovered else []
                if not (recovered and self._reached_benign(recovered)):
                    epoch_records += self._epochs(log, say, start_step, show_progress)
            step = int(self.step.numpy())
            if step >= self.total_steps:
                # Trained with --stop_at_benign to the end without reaching it: still a run meant for
                # Table 2 only (its length is the study's max_epochs, not the curve's).
                aimed = {"stop_at_benign": self.run_cfg.stop_at_benign} if self.run_cfg.stop_at_benign else {}
                log.event(step, "finished", {"epochs": self.train_cfg.epochs, **aimed})
            elif not already and epoch_records and self._reached_benign(epoch_records[-1]):
                last = epoch_records[-1]
                early = True
                log.event(step, "finished", {"epochs": self.train_cfg.epochs, "early": True, "epoch": last["epoch"],
                                             "test_acc": last["test_acc"],
                                             "stop_at_benign": self.run_cfg.stop_at_benign})
                say(f"finished early after epoch {last['epoch']}: benign accuracy {last['test_acc']:.4f} reaches "
                    f"--stop_at_benign {self.run_cfg.stop_at_benign:g}")
        except KeyboardInterrupt:
            log.close(quietly=True)
            self._save()
            say(f"\ninterrupted: saved step {int(self.step.numpy())}; run the same command to resume")
            raise
        except BaseException:
            log.close(quietly=True)  # the error says what went wrong; a second one from the log would hide it
            raise
        finally:
            log.close()
            if not self.chief:
                shutil.rmtree(self.checkpoint_dir.parent, ignore_errors=True)
        return TrainResult(self.run_dir, int(self.step.numpy()), self.total_steps, epoch_records,
                           self.train_step.experimental_get_tracing_count(), finished_early=early)

    def _reached_benign(self, record: dict) -> bool:
        return bool(self.run_cfg.stop_at_benign) and record["test_acc"] >= self.run_cfg.stop_at_benign

    def _epochs(self, log: RunLog, say, start_step: int, show_progress: bool = True) -> list[dict]:
        cfg, run_cfg = self.train_cfg, self.run_cfg
        records = []
        last_save = time.monotonic()
        stop_at = run_cfg.stop_after_steps or self.total_steps
        first_epoch, skip = divmod(start_step, self.steps_per_epoch)
        # Mid-epoch saves on a timer would differ between workers: multi-worker runs save by step.
        every_minutes = 0 if run_cfg.strategy == "multi_worker" else run_cfg.checkpoint_every_minutes
        for epoch in range(first_epoch, cfg.epochs):
            batches = self._distribute(data.train_batches(
                self.dataset.train_images, self.dataset.train_labels, batch_size=cfg.batch_size,
                seed=cfg.seed, epoch=epoch, augment=self.augment,
                skip_batches=skip if epoch == first_epoch else 0))
            say(f"epoch {epoch + 1}/{cfg.epochs}")
            # A bar with ETA on a terminal; one line per epoch in a log file (Keras would redraw it).
            progress = keras.utils.Progbar(self.steps_per_epoch, verbose=(1 if sys.stdout.isatty() else 2)
                                           if show_progress else 0)
            epoch_window, log_window = MetricWindow(), MetricWindow()
            epoch_started = time.perf_counter()
            timing = {"partial": epoch == first_epoch and skip > 0,  # resumed mid-epoch: part of an epoch
                      "includes_tracing": epoch == first_epoch}   # this process's first step compiles it
            for x, y in batches:
                metrics = self.train_step(x, y)
                step = int(self.step.numpy())
                if not is_finite(metrics["loss"]):
                    raise TrainingError(
                        f"non-finite loss at step {step} (epoch {epoch + 1}): training stopped; the last "
                        f"good checkpoint in {self.checkpoint_dir} is kept (try a lower --lr)")
                for window in (epoch_window, log_window):
                    window.add(metrics, cfg.batch_size)
                if step == start_step + 1:
                    log_window.restart_clock()
                if step % run_cfg.log_every_steps == 0:
                    log.scalars(step, log_window.summary(), "train")
                    log_window.reset()
                progress.update(step - epoch * self.steps_per_epoch, [("loss", float(metrics["loss"]))])
                end_of_epoch = step % self.steps_per_epoch == 0
                if step >= stop_at and not end_of_epoch:
                    self._save()
                    say(f"\nstopped after step {step} as asked; run the same command to resume")
                    return records
                if (every_minutes and not end_of_epoch
                        and time.monotonic() - last_save > 60 * every_minutes):
                    self._save()
                    last_save = time.monotonic()
            record, x_adv = self._end_of_epoch(epoch, epoch_window, time.perf_counter() - epoch_started, timing)
            # The record claims the checkpoint (and the kept weights): it is logged after them.
            self._save()
            stopping = self._reached_benign(record) and int(self.step.numpy()) < self.total_steps
            if self.chief and (stopping or keeps_epoch(run_cfg.keep_checkpoints, epoch + 1, cfg.epochs)):
                self._keep_epoch(epoch + 1)
            self._log_epoch(log, record, x_adv)
            records.append(record)
            say(_epoch_line(record))
            last_save = time.monotonic()
            if stopping:
                break
            if int(self.step.numpy()) >= stop_at and int(self.step.numpy()) < self.total_steps:
                say(f"stopped after step {int(self.step.numpy())} as asked; run the same command to resume")
                break
        return records

    def _end_of_epoch(self, epoch: int, window: MetricWindow, seconds: float, timing: dict):
        """The epoch's record and the monitor's adversarials (for the image grid), not yet logged.
        ``seconds``: the epoch's training steps alone; the evaluation below is timed apart."""
        evaluation_started = time.perf_counter()
        test_acc = self._accuracy(self.dataset.test_images, self.dataset.test_labels)
        x_adv, diagnostics = [], []
        for x, y in self._monitor_batches():
            x_adv.append(self.ema_attack(x, y).numpy())
            diagnostics.append((len(y), self.ema_monitor(x, y, x_adv[-1])))
        x_adv = np.concatenate(x_adv)
        adv_acc = self._accuracy(x_adv, self.monitor_y, scaled=True)
        norms = np.sqrt(((x_adv - self.monitor_x) ** 2).reshape(len(x_adv), -1).sum(axis=1))
        record = {"epoch": epoch + 1, "test_acc": test_acc, "monitor_adv_acc": adv_acc,
                  "monitor_delta_l2_mean": float(norms.mean()),
                  "monitor_delta_l2_median": float(np.median(norms)),
                  **{f"monitor_{k}": float(sum(n * float(m[k]) for n, m in diagnostics) / len(x_adv))
                     for k in diagnostics[0][1]},
                  "seconds_per_epoch": seconds, **timing,
                  **{f"train_{k}": v for k, v in window.summary().items()}}
        record["seconds_evaluating"] = time.perf_counter() - evaluation_started
        record["training_attack"] = self.defense.trains_on_attack
        return record, x_adv

    def _log_epoch(self, log: RunLog, record: dict, x_adv: np.ndarray) -> None:
        step = int(self.step.numpy())
        log.scalars(step, {k: v for k, v in record.items() if k != "epoch" and not isinstance(v, bool)}, "epoch")
        log.event(step, "epoch_record", record)
        log.perturbation_grid(step, self.monitor_x[:_GRID_EXAMPLES], x_adv[:_GRID_EXAMPLES])

    def _recover_epoch_end(self, log: RunLog, say) -> dict | None:
        """A run stopped between an epoch's checkpoint and its record (a kill, a full disk) resumes
        at that epoch's end without the record: measure it again from the restored weights, so the
        matching and the report find every epoch. Returns the record, or None when none was missing."""
        step = int(self.step.numpy())
        if not self.chief or step == 0 or step % self.steps_per_epoch:
            return None
        if any(r.get("step") == step for r in rundir.read_metrics(self.run_dir, "epoch_record")):
            return None
        epoch = step // self.steps_per_epoch
        record, x_adv = self._end_of_epoch(epoch - 1, MetricWindow(), 0.0,
                                           {"partial": True, "includes_tracing": False, "recovered": True})
        self._save_ema()  # the checkpoint's averaged weights, which the stopped run may not have exported
        if self._reached_benign(record) or keeps_epoch(self.run_cfg.keep_checkpoints, epoch, self.train_cfg.epochs):
            self._keep_epoch(epoch)
        self._log_epoch(log, record, x_adv)
        say(f"epoch {epoch}'s record was missing (the last run stopped after its checkpoint): measured again, "
            f"test acc (EMA) {record['test_acc']:.4f}")
        return record

    def _distribute(self, batches: tf.data.Dataset):
        """Global batches -> one slice per replica (the default strategy takes them whole)."""
        if self.run_cfg.strategy == "default":
            return batches
        options = tf.data.Options()  # each worker takes its share of every global batch
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return self.strategy.experimental_distribute_dataset(batches.with_options(options))

    def _monitor_batches(self):
        return _batches(self.monitor_x, self.monitor_y, self.train_cfg.batch_size)

    def _accuracy(self, images, labels, scaled=False) -> float:
        correct = 0
        for x, y in _batches(images, labels, max(self.train_cfg.batch_size, 256)):
            if not scaled:
                x = x.astype(np.float32) / 255.0
            correct += int((np.argmax(self.ema_logits(x).numpy(), axis=-1) == y).sum())
        return correct / len(labels)

    def _save(self) -> None:
        """A checkpoint of this step, then the averaged classifier alone (for evaluation without
        rebuilding the defense). Free space is checked before each and a failed write leaves no
        partial file: the caller logs what the checkpoint stands for only after it returns."""
        step = int(self.step.numpy())
        if self.manager.latest_checkpoint and self.manager.latest_checkpoint.endswith(f"-{step}"):
            return
        folder = self.checkpoint_dir

        def leftovers():  # the saver's temporary folder, a half-merged checkpoint, a half-written index
            return [*folder.glob("*_temp*"), *folder.glob(f"ckpt-{step}.*"), *folder.glob("checkpoint.tmp*")]

        with writes.guarded(folder, f"the step-{step} checkpoint", self.checkpoint_bytes(), leftovers, _DISK_HINT):
            self.manager.save(checkpoint_number=step)
        if self.chief:
            self._save_ema()

    def _save_ema(self) -> None:
        tmp = self.run_dir / ("tmp." + EMA_WEIGHTS_FILE)
        with writes.guarded(self.run_dir / EMA_WEIGHTS_FILE, "the averaged classifier", self.ema_bytes(), [tmp],
                            _DISK_HINT):
            self.ema.shadows["classifier"].save_weights(str(tmp))
            tmp.replace(self.run_dir / EMA_WEIGHTS_FILE)

    def _keep_epoch(self, epoch: int) -> None:
        folder = self.run_dir / EPOCHS_DIR
        tmp = folder / f"tmp.{epoch_weights_name(epoch)}"
        with writes.guarded(folder / epoch_weights_name(epoch), f"epoch {epoch}'s averaged classifier",
                            self.ema_bytes(), [tmp], _DISK_HINT):
            folder.mkdir(exist_ok=True)
            shutil.copyfile(self.run_dir / EMA_WEIGHTS_FILE, tmp)
            tmp.replace(folder / epoch_weights_name(epoch))


def _batches(images: np.ndarray, labels: np.ndarray, batch_size: int):
    """Fixed-order numpy batches for evaluation (two shapes at most: full and the remainder)."""
    for start in range(0, len(labels), batch_size):
        yield images[start:start + batch_size], labels[start:start + batch_size]


def _epoch_line(record: dict) -> str:
    attack = (f"acc under training attack {record['monitor_adv_acc']:.4f} "
              f"(mean L2 {record['monitor_delta_l2_mean']:.3f})" if record["training_attack"] else "no training attack")
    return (f"epoch {record['epoch']}: test acc (EMA) {record['test_acc']:.4f}, {attack}, "
            f"{record['seconds_per_epoch']:.1f} s training + {record['seconds_evaluating']:.1f} s evaluation")
