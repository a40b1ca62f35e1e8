"""Search for numbers: Bayesian and evolutionary samplers over float, int and choice parameters.

An LLM is poor at tuning a number from a handful of scores; a sampler that models the scores
seen so far is good at exactly that and needs no model skill. This module holds

- `SearchSpace`: which trainable parameters a sampler can handle (float and int with both
  bounds, choice) and how their values map to the sampler's (a choice is its index);
- `Sampler`: the state of one search, built ONLY from the evaluations the loop reports
  (`observe`), in order. Its proposal is a pure function of that list and the seed, so a resumed
  run, whose loop replays every recorded evaluation, proposes exactly what an uninterrupted run
  would, with nothing extra in the checkpoint;
- `Search`: the search-only optimizer (no LLM) with Optuna's TPE, CMA-ES and random samplers,
  a Gaussian process (`bayesian-optimization`) and particle swarms (`nevergrad`), the Trace
  paper's own baselines.

Libraries are imported when first used: Optuna (and `cmaes` for CMA-ES) come with the
``search`` extra, GP and PSO with the ``bench`` extra.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Sequence

from opto_core.kernel.backward import ProblemInstance
from opto_core.kernel.parameters import Parameter
from opto_core.optimizers.protocol import ParameterSet, Proposal

#: Sampler names, and where each comes from.
SAMPLERS: dict[str, str] = {
    "tpe": "optuna TPESampler (the search extra)",
    "cmaes": "optuna CmaEsSampler over the `cmaes` package (the search extra)",
    "random": "optuna RandomSampler (the search extra)",
    "gp": "Gaussian-process Bayesian optimization from `bayesian-optimization` (the bench extra)",
    "pso": "particle swarm optimization from `nevergrad` (the bench extra)",
}
OPTUNA_SAMPLERS = ("tpe", "cmaes", "random")
SEARCH_KINDS = ("float", "int", "choice")


class SamplerUnavailable(ImportError):
    """The library behind a sampler is not installed; the message names the extra to install."""


def check_sampler(name: str, allowed: Sequence[str] = tuple(SAMPLERS)) -> str:
    if name not in allowed:
        raise ValueError(f"unknown sampler {name!r}; the samplers are: {', '.join(allowed)}")
    return name


def _need(module: str, extra: str, sampler: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SamplerUnavailable(
            f"the {sampler!r} sampler needs the {module.split('.')[0]!r} package: "
            f"pip install 'opto-adapters[{extra}]' ({exc})"
        ) from exc


# ----- the space -------------------------------------------------------------------------------------
def searchable(parameter: Parameter) -> bool:
    """True when a sampler can propose this parameter: a choice, or a number with both bounds."""
    if parameter.kind == "choice":
        return True
    return parameter.kind in ("float", "int") and parameter.lower is not None and parameter.upper is not None


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: ``kind`` float/int, or choice (searched as the index of the option)."""

    name: str
    kind: str
    lower: float = 0.0
    upper: float = 0.0
    choices: tuple[Any, ...] = ()

    @classmethod
    def of(cls, parameter: Parameter) -> Dimension:
        if parameter.kind == "choice":
            return cls(parameter.name, "choice", 0, len(parameter.choices or []) - 1, tuple(parameter.choices or ()))
        if parameter.lower is None or parameter.upper is None:
            raise ValueError(f"{parameter.name}: a search needs both bounds of a number (see `unbounded`)")
        if parameter.kind == "int":
            return cls(parameter.name, "int", math.ceil(parameter.lower), math.floor(parameter.upper))
        return cls(parameter.name, "float", float(parameter.lower), float(parameter.upper))

    def encode(self, value: Any) -> Any:
        """A parameter value in the sampler's terms, or None when it is outside the space."""
        if self.kind == "choice":
            for index, option in enumerate(self.choices):
                if option == value:
                    return index
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not self.lower <= value <= self.upper:
            return None
        return int(value) if self.kind == "int" else float(value)

    def decode(self, value: Any) -> Any:
        if self.kind == "choice":
            return copy.deepcopy(self.choices[int(round(value))])
        if self.kind == "int":
            return int(min(max(round(value), self.lower), self.upper))
        return float(min(max(value, self.lower), self.upper))


class SearchSpace:
    """The searched dimensions of a set of parameters (in a stable order: by name)."""

    def __init__(self, parameters: Sequence[Parameter]) -> None:
        self.dims = [Dimension.of(p) for p in sorted(parameters, key=lambda p: p.name) if p.trainable and searchable(p)]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dims]

    def key(self) -> tuple[Dimension, ...]:
        return tuple(self.dims)

    def encode(self, values: dict[str, Any]) -> dict[str, Any] | None:
        """The searched values of ``values`` in the sampler's terms; None if one is missing or outside."""
        out = {}
        for dim in self.dims:
            if dim.name not in values:
                return None
            encoded = dim.encode(values[dim.name])
            if encoded is None:
                return None
            out[dim.name] = encoded
        return out

    def decode(self, point: dict[str, Any]) -> dict[str, Any]:
        return {dim.name: dim.decode(point[dim.name]) for dim in self.dims}


def unbounded(parameters: Sequence[Parameter]) -> list[str]:
    """Trainable numbers a sampler cannot search because a bound is missing."""
    return [p.name for p in parameters if p.trainable and p.kind in ("float", "int") and not searchable(p)]


# ----- engines: one per library, each rebuilt from the observations alone -----------------------------
class _OptunaEngine:
    """Optuna's samplers by ask-and-tell. The study changes only in `add` (a reported evaluation:
    enqueue its values, ask, tell), so it is the same study however it was reached; a proposal
    is asked from a copy, with a sampler seeded by the number of trials."""

    def __init__(self, space: SearchSpace, sampler: str, seed: int, n_startup_trials: int) -> None:
        self.optuna = _need("optuna", "search", sampler)
        if sampler == "cmaes":
            _need("cmaes", "search", sampler)
        self.optuna.logging.set_verbosity(self.optuna.logging.WARNING)
        dist = self.optuna.distributions
        self.distributions = {
            d.name: (
                dist.CategoricalDistribution(list(range(len(d.choices))))
                if d.kind == "choice"
                else dist.IntDistribution(int(d.lower), int(d.upper))
                if d.kind == "int"
                else dist.FloatDistribution(d.lower, d.upper)
            )
            for d in space.dims
        }
        self.kind, self.seed, self.n_startup = sampler, seed, n_startup_trials
        self.study = self.optuna.create_study(direction="maximize", sampler=self._sampler(0))

    def _sampler(self, salt: int) -> Any:
        samplers = self.optuna.samplers
        seed = (self.seed * 1_000_003 + salt) % (2**31)
        if self.kind == "tpe":
            return samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup)
        if self.kind == "cmaes":
            return samplers.CmaEsSampler(seed=seed, n_startup_trials=0, warn_independent_sampling=False)
        return samplers.RandomSampler(seed=seed)

    def add(self, point: dict[str, Any], score: float) -> None:
        self.study.sampler = self._sampler(len(self.study.trials))
        self.study.enqueue_trial(point, skip_if_exists=False)
        trial = self.study.ask(self.distributions)
        self.study.tell(trial, score)

    def propose(self, fixed: dict[str, Any] | None, attempt: int) -> dict[str, Any]:
        scratch = self.optuna.create_study(
            direction="maximize", sampler=self._sampler(len(self.study.trials) + 7919 * attempt)
        )
        scratch.add_trials(self.study.trials)
        if fixed:
            scratch.enqueue_trial(fixed, skip_if_exists=False)
        return dict(scratch.ask(self.distributions).params)


class _GPEngine:
    """A Gaussian process with an upper-confidence-bound acquisition (`bayesian-optimization`);
    the first ``n_startup_trials`` proposals are uniform random. Ints and choices are searched
    as continuous values and rounded (that library's own advice for version 1.x)."""

    def __init__(self, space: SearchSpace, seed: int, n_startup_trials: int) -> None:
        self.bayes_opt = _need("bayes_opt", "bench", "gp")
        self.bounds = {d.name: (float(d.lower), float(d.upper)) for d in space.dims}
        self.space, self.seed, self.n_startup = space, seed, n_startup_trials
        self.points: list[tuple[dict[str, Any], float]] = []

    def add(self, point: dict[str, Any], score: float) -> None:
        self.points.append(({k: float(v) for k, v in point.items()}, score))

    def propose(self, fixed: dict[str, Any] | None, attempt: int) -> dict[str, Any]:
        import numpy as np

        seed = (self.seed * 1_000_003 + len(self.points) + 7919 * attempt) % (2**31)
        if len(self.points) < self.n_startup:
            rng = np.random.RandomState(seed)
            return {name: rng.uniform(lo, hi) for name, (lo, hi) in self.bounds.items()}
        optimizer = self.bayes_opt.BayesianOptimization(
            f=None, pbounds=self.bounds, random_state=seed, verbose=0, allow_duplicate_points=True
        )
        for point, score in self.points:
            optimizer.register(params=point, target=score)
        return dict(optimizer.suggest(self.bayes_opt.UtilityFunction(kind="ucb", kappa=2.576)))


class _NevergradEngine:
    """Nevergrad's particle swarm. Its state is the optimizer's own; `add` replays one evaluation
    (ask, then tell what was asked when the values match, else tell the values as not asked), and
    a proposal is asked from a deep copy, so the next `add` asks the same candidate again."""

    def __init__(self, space: SearchSpace, seed: int) -> None:
        ng = _need("nevergrad", "bench", "pso")
        import numpy as np

        dims = {}
        for d in space.dims:
            if d.kind == "choice":
                dims[d.name] = ng.p.Choice(list(range(len(d.choices))))
            elif d.kind == "int":
                dims[d.name] = ng.p.Scalar(lower=d.lower, upper=d.upper).set_integer_casting()
            else:
                dims[d.name] = ng.p.Scalar(lower=d.lower, upper=d.upper)
        self.parametrization = ng.p.Dict(**dims)
        self.parametrization.random_state = np.random.RandomState(seed % (2**31))
        self.optimizer = ng.optimizers.PSO(parametrization=self.parametrization, budget=None)

    def add(self, point: dict[str, Any], score: float) -> None:
        candidate = self.optimizer.ask()
        if dict(candidate.value) != point:
            candidate = self.parametrization.spawn_child(new_value=dict(point))
        self.optimizer.tell(candidate, -score)  # nevergrad minimizes

    def propose(self, fixed: dict[str, Any] | None, attempt: int) -> dict[str, Any]:
        scratch = copy.deepcopy(self.optimizer)
        candidate = scratch.ask()
        for _ in range(attempt):
            candidate = scratch.ask()
        return dict(candidate.value)


def make_engine(sampler: str, space: SearchSpace, seed: int, n_startup_trials: int) -> Any:
    check_sampler(sampler)
    if sampler in OPTUNA_SAMPLERS:
        return _OptunaEngine(space, sampler, seed, n_startup_trials)
    if sampler == "gp":
        return _GPEngine(space, seed, n_startup_trials)
    return _NevergradEngine(space, seed)


# ----- the sampler: observations in, proposals out -----------------------------------------------------
class Sampler:
    """One search over the searchable parameters, fed by the loop's evaluations.

    ``trials`` is the list of (values, score) reported so far, in order: the whole state. The
    engine is rebuilt from it whenever the space changes, so a proposal never depends on
    anything the loop does not replay on resume.
    """

    def __init__(self, sampler: str = "tpe", *, seed: int = 0, n_startup_trials: int = 5) -> None:
        self.name = check_sampler(sampler)
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self.trials: list[tuple[dict[str, Any], float]] = []
        self._space: SearchSpace | None = None
        self._engine: Any = None
        self._fed = 0

    def observe(self, values: dict[str, Any], score: float | None) -> None:
        """Record one evaluation; an unscored one (None, NaN) teaches the sampler nothing."""
        if score is None or not math.isfinite(score):
            return
        self.trials.append((copy.deepcopy(values), float(score)))

    def _ready(self, space: SearchSpace) -> Any:
        if self._space is None or self._space.key() != space.key():
            self._space, self._engine, self._fed = (
                space,
                make_engine(self.name, space, self.seed, self.n_startup_trials),
                0,
            )
        for values, score in self.trials[self._fed :]:
            point = space.encode(values)
            if point is not None:  # values outside today's space (bounds changed) are left out
                self._engine.add(point, score)
        self._fed = len(self.trials)
        return self._engine

    def propose(
        self, space: SearchSpace, current: dict[str, Any], fixed: dict[str, Any] | None = None, attempts: int = 5
    ) -> dict[str, Any]:
        """New values for the space's parameters; ``fixed`` values (an LLM's ideas) are evaluated as
        they are. A candidate equal to the current values or to a tried point is asked again (with
        another seed) up to ``attempts`` times, so a step is not spent on a known result.

        The first trial is the current values: until one scored evaluation has been observed, the
        proposal is the current values themselves (enqueued, never a blind guess). In the loop the
        initial evaluation is observed before any step, so there the sampler's first trial is
        always the starting point and its search starts from it.
        """
        if not space.dims:
            return {}
        if not self.trials and not fixed:
            start = space.encode(current)
            if start is not None:
                return space.decode(start)
        engine = self._ready(space)
        encoded_fixed = None
        if fixed:
            encoded_fixed = {d.name: d.encode(fixed[d.name]) for d in space.dims if d.name in fixed}
            encoded_fixed = {k: v for k, v in encoded_fixed.items() if v is not None} or None
        seen = [space.encode(v) for v, _ in self.trials] + [space.encode(current)]
        values: dict[str, Any] = {}
        for attempt in range(max(1, attempts)):
            values = space.decode(engine.propose(encoded_fixed, attempt))
            if space.encode(values) not in seen:
                break
        return values

    def best(self) -> tuple[dict[str, Any], float] | None:
        return max(self.trials, key=lambda t: t[1]) if self.trials else None


# ----- the search-only optimizer ----------------------------------------------------------------------
class Search(ParameterSet):
    """A search-only baseline: every step proposes all searchable parameters from the sampler; no LLM.

    Text, code and json parameters are left as they are. A float or int parameter without both
    bounds is an error here (a sampler needs a range); `Hybrid` leaves such numbers to its LLM.
    """

    def __init__(
        self,
        parameters: Sequence[Parameter] | None = None,
        sampler: str = "tpe",
        *,
        seed: int = 0,
        n_startup_trials: int = 5,
    ) -> None:
        self.sampler = Sampler(sampler, seed=seed, n_startup_trials=n_startup_trials)
        super().__init__(parameters)

    def set_parameters(self, parameters: Sequence[Parameter]) -> None:
        missing = unbounded(parameters)
        if missing:
            raise ValueError(
                f"Search needs both bounds on every trainable number; missing on: {', '.join(missing)} "
                "(set lower= and upper=, freeze them, or use Hybrid, which leaves them to its LLM)"
            )
        super().set_parameters(parameters)
        if parameters and not SearchSpace(parameters).dims and any(p.trainable for p in parameters):
            raise ValueError(
                "Search has nothing to search: no trainable float, int or choice parameter "
                f"(trainable: {', '.join(p.name for p in parameters if p.trainable)})"
            )

    def observe(self, values: dict[str, Any], score: float | None) -> None:
        self.sampler.observe(values, score)

    def search_space(self) -> SearchSpace:
        return SearchSpace(list(self.trainable.values()))

    def propose(self, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
        """The sampler's next values; ``fixed`` values (another part's ideas) are evaluated as they are."""
        return self.sampler.propose(self.search_space(), self.current_values(), fixed)

    def step(
        self, instances: ProblemInstance | Sequence[ProblemInstance] = (), *, max_calls: int | None = None
    ) -> Proposal:
        """New values from the sampler; ``instances`` are not read and no model is called."""
        self._need_trainable()
        values = self.propose()
        return Proposal(
            reasoning=f"{self.sampler.name}: trial {len(self.sampler.trials) + 1} from "
            f"{len(self.sampler.trials)} evaluations",
            accepted=values,
            proposed_by=dict.fromkeys(values, "search"),
            attempts=0,
        )

    def state_dict(self) -> dict[str, Any]:
        return {}  # the sampler is rebuilt from the evaluations the loop replays (observe)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
