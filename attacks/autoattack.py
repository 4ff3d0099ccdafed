"""AutoAttack (Croce & Hein 2020, ICML): the field's standard robustness evaluation, on any Keras 3 backend.

Public API:

    autoattack(model_fn, x, y, *, eps=None, norm=2, version="standard", attacks=None, seed=0,
               batch_size=500, clip_min=0.0, clip_max=1.0, attack_kwargs=None, tolerance=1e-5,
               verbose=False, implementation=None) -> AutoAttackResult

model_fn: x -> logits (a Keras model or any callable; run in float32). x: images [N, H, W, C] in
[clip_min, clip_max] (numpy or tensor); y: integer labels [N]. eps: the radius, default 0.5 (L2)
or 8/255 (L-inf). norm: 2 or np.inf.
version:
- "standard" (the original's): APGD-CE (100 iterations, 1 restart), APGD-T (9 targets, 100
  iterations each), FAB-T (9 targets, 100 iterations each), Square (5000 queries, p_init 0.8, the
  p schedule not rescaled, as the original runs it);
- "rand" (for randomised defenses, the original's): APGD-CE and APGD-DLR with 20 EOT iterations;
- "custom": the attacks in `attacks`, any of "apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr",
  run in that order with the standard settings.
attack_kwargs: {name: {keyword: value}} overrides of an attack's settings (e.g. {"square":
{"n_queries": 1000}}); see attacks.apgd, attacks.fab, attacks.square for the keywords.
batch_size: examples per attack call. seed: passed to every attack (stateless randomness).
implementation: "tensorflow" (attacks/apgd.py, fab.py, square.py: tf.function attacks) or "keras"
(attacks/keras_ops/: written once against keras.ops, for TensorFlow, JAX and PyTorch); None picks
"tensorflow" on Keras's TensorFlow backend and "keras" on the others (docs/backends.md). The
protocol below is this module's, the same for both.

Protocol, as the original's run_standard_evaluation: an example is robust if it is classified
correctly and no attack found a point inside the ball and the box that the model misclassifies.
Misclassified examples are not attacked; each attack runs only on the examples still robust; a
point an attack returns counts only if it is misclassified, finite, within `tolerance` of the
box and has norm at most eps + tolerance (otherwise it is counted in `rejected` and the example
stays robust). x_adv holds, per example, the first successful attack's point, else x.

AutoAttackResult fields:
    x_adv            numpy array, x's shape and dtype: the worst case found per example
    y                int64 [N]: the labels
    clean_correct    bool [N]: classified correctly without attack
    robust_flags     {"clean", then each attack: bool [N]}: robust after that stage (ordered)
    robust_accuracy  {same keys: float}: mean of robust_flags, non-increasing along the keys
    seconds          {attack: float}: wall time of each attack (the clean pass under "clean")
    forward_passes   {attack: int}: images the model evaluated (a gradient step counts one)
    attacked         {attack: int}: examples each attack ran on (those still robust before it)
    rejected         {attack: int}: misclassified outputs refused for leaving the ball or box
    attacks, version, norm, eps, seed, implementation
    robust           property: the final robust flags; final_robust_accuracy: their mean
    max_perturbation float: the largest norm of x_adv - x (<= eps + tolerance)
    as_dict()        the scalars above as a JSON-ready dict (no arrays)
Warnings, as the original's checks: a model whose outputs vary between calls (use
version="rand"), outputs that look like probabilities instead of logits, more target classes
than the model has, and Square lowering robust accuracy after the gradient attacks by > 0.2 pp.
"""

import dataclasses
import importlib
import time
import warnings
import weakref

import numpy as np

from attacks import _checks
from configs.autoattack import ATTACKS, VERSIONS
from configs.settings import default_eps

DEFAULT_EPS = {2: default_eps(2), np.inf: default_eps(np.inf)}  # the one threat model's radii, by norm
_STANDARD_SETTINGS = {
    "apgd-ce": dict(loss="ce", n_iter=100, n_restarts=1, eot_iter=1, rho=0.75),
    "apgd-dlr": dict(loss="dlr", n_iter=100, n_restarts=1, eot_iter=1, rho=0.75),
    "apgd-t": dict(n_target_classes=9, n_iter=100, n_restarts=1, eot_iter=1, rho=0.75),
    "fab-t": dict(n_target_classes=9, n_iter=100, n_restarts=1, alpha_max=0.1, eta=1.05, beta=0.9),
    "square": dict(n_queries=5000, p_init=0.8, n_restarts=1, rescale_schedule=False),
}
_FUNCTION_NAMES = {"apgd-ce": "apgd", "apgd-dlr": "apgd", "apgd-t": "apgd_targeted", "fab-t": "fab_targeted",
                   "square": "square_attack"}
_MODULES = {"apgd": "apgd", "apgd_targeted": "apgd", "fab_targeted": "fab", "square_attack": "square"}
IMPLEMENTATIONS = ("tensorflow", "keras")
# {attack: the tf.function attack}, filled on first use, when TensorFlow loads (never under JAX).
_FUNCTIONS = {}


def _functions(package):
    """{attack: function} of the modules in ``package`` (attacks or attacks.keras_ops)."""
    return {name: getattr(importlib.import_module(f"{package}.{_MODULES[function]}"), function)
            for name, function in _FUNCTION_NAMES.items()}


def attack_settings(version, attacks=None):
    """{attack: keyword settings} that `version` runs, in order ("rand": EOT 20 on APGD)."""
    if version not in ("standard", "rand", "custom"):
        raise ValueError(f"version must be 'standard', 'rand' or 'custom', got {version!r}.")
    if version == "custom":
        if not attacks:
            raise ValueError("version='custom' needs a non-empty `attacks` list.")
        names = tuple(attacks)
    else:
        if attacks:
            raise ValueError(f"`attacks` is only for version='custom' (version {version!r} fixes them).")
        names = VERSIONS[version]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"attacks must be distinct names among {ATTACKS}, got {names!r}.")
    settings = {n: dict(_STANDARD_SETTINGS[n]) for n in names}
    if version == "rand":
        for n in names:
            settings[n]["eot_iter"] = 20
    return settings


class _CountingModel:
    """model_fn plus a counter of the images it evaluates, usable inside the compiled attacks.
    One per model_fn (cached), so that repeated evaluations reuse the attacks' traces."""

    def __init__(self, model_fn):
        import tensorflow as tf

        self._model_fn = model_fn
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False)

    def __call__(self, x):
        import tensorflow as tf

        self.count.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
        return self._model_fn(x)


_COUNTERS = weakref.WeakKeyDictionary()


def _counting(model_fn):
    try:
        counted = _COUNTERS.get(model_fn)
        if counted is None:
            counted = _COUNTERS[model_fn] = _CountingModel(model_fn)
        return counted
    except TypeError:  # not weak-referenceable: a fresh counter (and fresh traces)
        return _CountingModel(model_fn)


@dataclasses.dataclass
class AutoAttackResult:
    x_adv: np.ndarray
    y: np.ndarray
    clean_correct: np.ndarray
    robust_flags: dict
    robust_accuracy: dict
    seconds: dict
    forward_passes: dict
    attacked: dict
    rejected: dict
    attacks: tuple
    version: str
    norm: float
    eps: float
    seed: int
    max_perturbation: float
    implementation: str = "tensorflow"

    @property
    def robust(self):
        return list(self.robust_flags.values())[-1]

    @property
    def final_robust_accuracy(self):
        return float(np.mean(self.robust)) if len(self.robust) else float("nan")

    def as_dict(self):
        return dict(version=self.version, attacks=list(self.attacks), norm="inf" if self.norm == np.inf else 2,
                    eps=float(self.eps), seed=int(self.seed), n_examples=int(len(self.y)),
                    clean_accuracy=float(self.robust_accuracy["clean"]),
                    robust_accuracy={k: float(v) for k, v in self.robust_accuracy.items()},
                    final_robust_accuracy=self.final_robust_accuracy,
                    seconds={k: float(v) for k, v in self.seconds.items()},
                    forward_passes={k: int(v) for k, v in self.forward_passes.items()},
                    attacked={k: int(v) for k, v in self.attacked.items()},
                    rejected={k: int(v) for k, v in self.rejected.items()},
                    max_perturbation=float(self.max_perturbation), implementation=self.implementation)


def _norms(delta, norm):
    flat = delta.reshape(len(delta), -1).astype(np.float64)
    return np.abs(flat).max(1) if norm == np.inf else np.sqrt((flat ** 2).sum(1))


class _Engine:
    """One implementation of the attacks with a counter of the images the model evaluates:
    "tensorflow", the tf.function attacks of attacks/apgd.py, fab.py, square.py (TensorFlow models);
    "keras", those of attacks/keras_ops/ (keras.ops, any Keras 3 backend)."""

    def __init__(self, model_fn, implementation):
        self.implementation = implementation
        if implementation == "tensorflow":
            for name, function in _functions("attacks").items():
                _FUNCTIONS.setdefault(name, function)
            self._functions = _FUNCTIONS
            self._model = _counting(model_fn)
            self._passes = None
        else:
            from attacks.keras_ops import common

            self._functions = _functions("attacks.keras_ops")
            self._model, self._passes, self._logits_of = model_fn, 0, common.logits_of

    def count(self):
        return int(self._model.count.numpy()) if self._passes is None else self._passes

    def logits(self, x):
        """float32 logits of a batch (NumPy)."""
        if self._passes is None:
            import tensorflow as tf

            return np.asarray(tf.cast(self._model(tf.constant(x)), tf.float32))
        self._passes += len(x)
        return self._logits_of(self._model, x)

    def attack(self, name, x, y, **kwargs):
        """x_adv (NumPy) of attack ``name`` (an AutoAttack part) on the batch."""
        function = self._functions[name]
        if self._passes is None:
            import tensorflow as tf

            return np.asarray(function(self._model, tf.constant(x), y=tf.constant(y), **kwargs))
        x_adv, passes = function(self._model, x, y=y, return_count=True, **kwargs)
        self._passes += passes
        return x_adv


def default_implementation():
    """The tf.function attacks on TensorFlow (the ones training and the tests' references use), the
    keras.ops ones on every other Keras backend."""
    import keras

    return "tensorflow" if keras.backend.backend() == "tensorflow" else "keras"


def _predict(engine, x, batch_size):
    return np.concatenate([np.argmax(engine.logits(x[i:i + batch_size]), -1)
                           for i in range(0, len(x), batch_size)]) if len(x) else np.zeros(0, np.int64)


def _check_model(engine, x, y, version, settings):
    """The original's warnings (checks.py), on one batch."""
    first = engine.logits(x)
    classes = first.shape[-1]
    if version != "rand":
        second = engine.logits(x)
        scale = np.linalg.norm(first, axis=-1, keepdims=True) + 1e-10
        if np.max(np.abs(first / scale - second / scale)) > 1e-4:
            warnings.warn("the model's outputs differ between two calls: it seems to be a randomized "
                          "defense; use version='rand'.")
    if first.max() < 1 + 1e-5 and first.min() > -1e-5 and np.all(np.abs(first.sum(-1) - 1) < 1e-5):
        warnings.warn("the model's outputs look like probabilities; AutoAttack needs logits.")
    for name in ("apgd-t", "fab-t"):
        if name in settings and settings[name]["n_target_classes"] + 1 > classes:
            warnings.warn(f"{name}: {settings[name]['n_target_classes']} target classes asked, "
                          f"{classes - 1} possible; using {classes - 1}.")
    needs = {"apgd-dlr": 3, "apgd-t": 4}
    for name, minimum in needs.items():
        if name in settings and classes < minimum:
            raise ValueError(f"{name} needs >= {minimum} classes, the model has {classes}.")
    return classes


def autoattack(model_fn, x, y, *, eps=None, norm=2, version="standard", attacks=None, seed=0,
               batch_size=500, clip_min=0.0, clip_max=1.0, attack_kwargs=None, tolerance=1e-5,
               verbose=False, progress=None, clean_predictions=None, implementation=None):
    """Runs AutoAttack; see the module docstring for the protocol and the result's fields.
    ``implementation``: "tensorflow" (the tf.function attacks; TensorFlow only) or "keras" (the
    keras.ops attacks, any Keras 3 backend); None: "tensorflow" on the TensorFlow backend, else "keras".
    ``clean_predictions``: the model's predictions on ``x`` when the caller has them already
    (an evaluation computes them once for every attack); None: computed here.
    ``progress(attack, done, total)``, if given, is called after each batch of each attack."""
    _checks.check_norm(norm)
    norm = np.inf if norm == np.inf else 2
    eps = default_eps(norm) if eps is None else float(eps)
    _checks.check_non_negative("eps", eps)
    _checks.check_integer("seed", seed, 0)
    _checks.check_integer("batch_size", batch_size, 1)
    _checks.check_non_negative("tolerance", tolerance)
    settings = attack_settings(version, attacks)
    for name, overrides in (attack_kwargs or {}).items():
        if name not in settings:
            raise ValueError(f"attack_kwargs names {name!r}, which this run does not include ({tuple(settings)}).")
        settings[name].update(overrides)
    x = np.asarray(x)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"x must be images [N, H, W, C] with one label each, got x {x.shape}, y {y.shape}.")
    x32 = x.astype(np.float32)
    if len(x) and (x32.min() < clip_min or x32.max() > clip_max):
        raise ValueError(f"x must lie in [clip_min, clip_max] = [{clip_min}, {clip_max}].")
    implementation = default_implementation() if implementation is None else implementation
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS} or None, got {implementation!r}.")
    engine = _Engine(model_fn, implementation)
    if len(x):
        _check_model(engine, x32[:batch_size], y[:batch_size], version, settings)

    started = time.perf_counter()
    before = engine.count()
    clean = _predict(engine, x32, batch_size) if clean_predictions is None else np.asarray(clean_predictions)
    robust = clean.reshape(-1) == y
    flags, seconds = {"clean": robust.copy()}, {"clean": time.perf_counter() - started}
    passes = {"clean": engine.count() - before}
    attacked, rejected = {}, {}
    x_adv = x.copy()
    for name, kwargs in settings.items():
        started, before = time.perf_counter(), engine.count()
        todo = np.flatnonzero(robust)
        attacked[name], rejected[name] = len(todo), 0
        for start in range(0, len(todo), batch_size):
            rows = todo[start:start + batch_size]
            result = engine.attack(name, x32[rows], y[rows], eps=eps, norm=norm, clip_min=clip_min,
                                   clip_max=clip_max, seed=seed, **kwargs)
            fooled = _predict(engine, result, batch_size) != y[rows]
            finite = np.all(np.isfinite(result.reshape(len(rows), -1)), axis=1)
            flat = result.reshape(len(rows), -1)
            in_box = (flat.min(1) >= clip_min - tolerance) & (flat.max(1) <= clip_max + tolerance)
            in_ball = _norms(result - x32[rows], norm) <= eps + tolerance
            valid = finite & in_box & in_ball
            rejected[name] += int(np.sum(fooled & ~valid))
            success = rows[fooled & valid]
            robust[success] = False
            x_adv[success] = result[fooled & valid].astype(x.dtype)
            if progress is not None:
                progress(name, start + len(rows), len(todo))
        flags[name] = robust.copy()
        seconds[name] = time.perf_counter() - started
        passes[name] = engine.count() - before
        if verbose:
            print(f"{name}: robust accuracy {robust.mean():.2%} ({attacked[name]} attacked, "
                  f"{seconds[name]:.1f} s)")
    accuracy = {k: float(v.mean()) if len(v) else float("nan") for k, v in flags.items()}
    if "square" in accuracy and len(accuracy) > 2:
        others = min(v for k, v in accuracy.items() if k != "square")
        if accuracy["square"] < others - 0.002:
            warnings.warn(f"Square lowered robust accuracy by {others - accuracy['square']:.2%} after the "
                          "gradient attacks: the evaluation may be unreliable (gradient masking?).")
    max_perturbation = float(_norms(x_adv.astype(np.float32) - x32, norm).max()) if len(x) else 0.0
    return AutoAttackResult(x_adv=x_adv, y=y, clean_correct=flags["clean"], robust_flags=flags,
                            robust_accuracy=accuracy, seconds=seconds, forward_passes=passes,
                            attacked=attacked, rejected=rejected, attacks=tuple(settings),
                            version=version, norm=norm, eps=eps, seed=int(seed),
                            max_perturbation=max_perturbation, implementation=implementation)
