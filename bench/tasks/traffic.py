"""The Trace paper's traffic-control experiment on UXSim: a four-way signalized intersection.

Two phases (east-west and north-south green), demand from all four approaches (straight ahead
and turning), a 30-minute simulation. Two tasks:

- ``traffic``: a fixed-time plan, the green times of the two phases as int parameters within the
  range of Trace's own UXSim example ([15, 90] s). Feedback: the average delay and each
  approach's mean queue, as text; score = minus the average delay (seconds).
- ``traffic_controller``: the controller is a code parameter, a function from the queues it
  observes to the next pair of greens, called every 150 s; the demand shifts from east-west to
  north-south and back, so no fixed plan is right all the time and the LLM's part matters.

References the harness computes on the same scenario: the best fixed-time plan (a grid every
5 s over [15, 90]², refined to the second within 2 s of its best point: the optimum of that plan family
up to UXSim's 5-vehicle platoons), the equal split (30 s / 30 s), and an actuated rule (a 30 s
cycle split in proportion to the measured queues, each phase at least 15 s) standing in for SCATS.

Everything is deterministic per seed: the seed draws the demand, and UXSim runs with it.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any, Callable

from opto_core.kernel.code import function_source  # noqa: F401  (tests write controllers from these functions)
from opto_core.kernel.feedback import Feedback
from opto_core.kernel.parameters import Parameter

MIN_GREEN, MAX_GREEN = 15, 90  # Trace's UXSim example: green times in [15, 90] seconds
EQUAL_SPLIT = (30, 30)
TMAX = 1800  # seconds simulated
DEMAND_END = 1500  # no new vehicles in the last 5 minutes, so the queues can clear
INTERVAL = 150  # seconds between two controller decisions
APPROACHES = ("W", "E", "N", "S")
OPPOSITE = {"W": "E", "E": "W", "N": "S", "S": "N"}
TURNS = {"W": ("N", "S"), "E": ("S", "N"), "N": ("E", "W"), "S": ("W", "E")}
GROUP = {"W": 0, "E": 0, "N": 1, "S": 1}  # signal group 0: east-west green, 1: north-south green


def available() -> str:
    """Why the traffic tasks cannot run here ('' when they can)."""
    try:
        import uxsim  # noqa: F401
    except ImportError as exc:
        return f"the traffic tasks need UXSim ({exc}): pip install 'opto-adapters[bench]' (or pip install uxsim)"
    return ""


def _uxsim() -> Any:
    reason = available()
    if reason:
        raise ImportError(reason)
    import uxsim

    return uxsim


# ----- scenarios ---------------------------------------------------------------------------------------
def scenario(seed: int, varying: bool = False) -> dict[str, Any]:
    """The demand (vehicles per second per approach, by period), drawn from the seed.

    East-west carries more than north-south; with ``varying``, the heavy direction swaps for
    the middle third of the demand period."""
    rng = random.Random(f"traffic:{seed}:{varying}")
    heavy = {"W": rng.uniform(0.26, 0.34), "E": rng.uniform(0.22, 0.30)}
    light = {"N": rng.uniform(0.08, 0.14), "S": rng.uniform(0.06, 0.12)}
    base = {**heavy, **light}
    if not varying:
        periods = [(0, DEMAND_END, base)]
    else:
        swapped = {"W": light["N"], "E": light["S"], "N": heavy["W"], "S": heavy["E"]}
        periods = [(0, 500, base), (500, 1000, swapped), (1000, DEMAND_END, base)]
    return {
        "seed": seed,
        "periods": [{"start": a, "end": b, "rates": {k: round(v, 3) for k, v in r.items()}} for a, b, r in periods],
    }


class Intersection:
    """One UXSim world: the intersection, its four approaches and exits, and the scenario's demand."""

    CHUNK = 60  # seconds simulated between two samples of the queues

    def __init__(self, scene: dict[str, Any], greens: tuple[int, int]) -> None:
        ux = _uxsim()
        self.world = ux.World(
            name="", deltan=5, tmax=TMAX, print_mode=0, save_mode=0, show_mode=0, random_seed=int(scene["seed"])
        )
        self.node = self.world.addNode("I", 0, 0, signal=list(greens))
        position = {"W": (-1, 0), "E": (1, 0), "N": (0, 1), "S": (0, -1)}
        self.approach = {}
        for side, (x, y) in position.items():
            origin = self.world.addNode(f"{side}_in", x, y)
            exit_node = self.world.addNode(f"{side}_out", x * 1.01, y * 1.01)
            self.approach[side] = self.world.addLink(
                f"{side}_approach",
                origin,
                self.node,
                length=500,
                free_flow_speed=15,
                jam_density=0.2,
                signal_group=GROUP[side],
            )
            self.world.addLink(f"{side}_exit", self.node, exit_node, length=500, free_flow_speed=15, jam_density=0.2)
        for period in scene["periods"]:
            for side, rate in period["rates"].items():
                for share, destination in ((0.7, OPPOSITE[side]), (0.15, TURNS[side][0]), (0.15, TURNS[side][1])):
                    self.world.adddemand(
                        f"{side}_in", f"{destination}_out", period["start"], period["end"], rate * share
                    )
        self.queue_sums = dict.fromkeys(APPROACHES, 0.0)
        self.samples = 0
        self.time = 0  # seconds simulated so far

    def advance(self, seconds: int, greens: tuple[int, int] | None = None) -> dict[str, float]:
        """Run ``seconds`` more (with new greens if given); return the mean queue of each approach then."""
        if greens is not None:
            self.node.signal = [int(greens[0]), int(greens[1])]
        end = min(TMAX, self.time + seconds)
        window = dict.fromkeys(APPROACHES, 0.0)
        count = 0
        while self.time < end:
            step = min(self.CHUNK, end - self.time)
            self.world.exec_simulation(duration_t=step)
            self.time += step
            for side, link in self.approach.items():
                window[side] += link.num_vehicles_queue
                self.queue_sums[side] += link.num_vehicles_queue
            count += 1
            self.samples += 1
        return {side: round(total / max(count, 1), 1) for side, total in window.items()}

    def finish(self) -> dict[str, Any]:
        while self.time < TMAX:
            self.advance(INTERVAL)
        stats = self.world.analyzer.basic_to_pandas().iloc[0]
        return {
            "average_delay": round(float(stats["average_delay"]), 3),
            "completed_trips": int(stats["completed_trips"]),
            "total_trips": int(stats["total_trips"]),
            "mean_queue": {side: round(total / max(self.samples, 1), 1) for side, total in self.queue_sums.items()},
        }


def clamp(green: Any) -> int:
    return int(min(MAX_GREEN, max(MIN_GREEN, round(float(green)))))


def simulate_fixed(scene: dict[str, Any], green_ew: int, green_ns: int) -> dict[str, Any]:
    """A fixed-time plan: the result of the 30-minute simulation."""
    sim = Intersection(scene, (clamp(green_ew), clamp(green_ns)))
    result = sim.finish()
    result["greens"] = [clamp(green_ew), clamp(green_ns)]
    return result


def simulate_controlled(
    scene: dict[str, Any], controller: Callable[[dict[str, float], int, int], Any]
) -> dict[str, Any]:
    """A controller called every ``INTERVAL`` seconds with the queues and the current greens."""
    greens = EQUAL_SPLIT
    sim = Intersection(scene, greens)
    plan = []
    queues = sim.advance(INTERVAL)
    while sim.time < DEMAND_END:
        raw = controller(dict(queues), *greens)
        greens = (clamp(raw[0]), clamp(raw[1]))
        plan.append(list(greens))
        queues = sim.advance(INTERVAL, greens)
    result = sim.finish()
    result["plan"] = plan
    return result


# ----- the controllers the harness compares with --------------------------------------------------------
def actuated(queues: dict, green_ew: int, green_ns: int) -> tuple:
    """The next greens (east-west, north-south), in [15, 90] s, from the approaches' mean queues.

    ``queues`` maps "W", "E", "N", "S" to the mean number of queued vehicles over the last 150 s.
    """
    cycle = 2 * 15  # the shortest cycle the [15, 90] s range allows
    ew = queues["W"] + queues["E"] + 1.0
    ns = queues["N"] + queues["S"] + 1.0
    return round(cycle * ew / (ew + ns)), round(cycle * ns / (ew + ns))


def fixed_controller(queues: dict, green_ew: int, green_ns: int) -> tuple:
    """The next greens (east-west, north-south), in [15, 90] s, from the approaches' mean queues.

    ``queues`` maps "W", "E", "N", "S" to the mean number of queued vehicles over the last 150 s.
    """
    return green_ew, green_ns


@functools.lru_cache(maxsize=4096)
def _fixed_delay(seed: int, varying: bool, green_ew: int, green_ns: int) -> float:
    return simulate_fixed(scenario(seed, varying), green_ew, green_ns)["average_delay"]


@functools.lru_cache(maxsize=8)
def references(seed: int, varying: bool = False, step: int = 5, refine: int = 2) -> dict[str, Any]:
    """Average delays (s) of the reference plans on the seed's scenario, and the grid's best plan
    (every ``step`` seconds over the range, then every second within ``refine`` of the best)."""
    grid = {
        (e, n): _fixed_delay(seed, varying, e, n)
        for e in range(MIN_GREEN, MAX_GREEN + 1, step)
        for n in range(MIN_GREEN, MAX_GREEN + 1, step)
    }
    coarse = min(grid, key=lambda k: (grid[k], k))
    for e in range(max(MIN_GREEN, coarse[0] - refine), min(MAX_GREEN, coarse[0] + refine) + 1):
        for n in range(max(MIN_GREEN, coarse[1] - refine), min(MAX_GREEN, coarse[1] + refine) + 1):
            if (e, n) not in grid:
                grid[(e, n)] = _fixed_delay(seed, varying, e, n)
    best = min(grid, key=lambda k: (grid[k], k))
    scene = scenario(seed, varying)
    return {
        "grid_best_plan": list(best),
        "grid_best_delay": grid[best],
        "grid_points": len(grid),
        "equal_split_delay": _fixed_delay(seed, varying, *EQUAL_SPLIT),
        "actuated_delay": simulate_controlled(scene, actuated)["average_delay"],
    }


# ----- feedback -------------------------------------------------------------------------------------------
def feedback(example: dict[str, Any], output: Any) -> Feedback:
    """Score = minus the average delay (s); the text names the delay, the queues and the plan."""
    if not isinstance(output, dict) or "average_delay" not in output:
        return Feedback(-1000.0, f"The simulation did not produce a result: {output!r}")
    queues = ", ".join(f"{side} {q}" for side, q in output["mean_queue"].items())
    plan = (
        f" Greens (EW, NS) per {INTERVAL} s: {output['plan']}."
        if "plan" in output
        else f" Greens (EW, NS): {output.get('greens')}."
    )
    return Feedback(
        -float(output["average_delay"]),
        f"Average delay {output['average_delay']:.1f} s per vehicle ({output['completed_trips']} of "
        f"{output['total_trips']} trips completed). Mean queue per approach (vehicles): {queues}.{plan} "
        f"Lower delay is better.",
    )


# ----- the workflows, traced ------------------------------------------------------------------------------
@dataclass
class TrafficWorkflow:
    target: Any
    parameters: list[Parameter]


def python_target(start: tuple[int, int] = EQUAL_SPLIT) -> Any:
    """``traffic``: two int parameters (the greens) and one traced op, the simulation."""
    _uxsim()
    from opto_core.engine.target import FunctionTarget
    from opto_core.kernel.trace import op

    green_ew = Parameter(
        "green_ew",
        "int",
        start[0],
        lower=MIN_GREEN,
        upper=MAX_GREEN,
        description="seconds of green for the east-west phase (W and E approaches)",
    )
    green_ns = Parameter(
        "green_ns",
        "int",
        start[1],
        lower=MIN_GREEN,
        upper=MAX_GREEN,
        description="seconds of green for the north-south phase (N and S approaches)",
    )

    @op(
        name="simulate_intersection",
        description="Runs a 30-minute UXSim simulation of a four-way signalized intersection with a fixed-time "
        "plan (two phases: east-west green, then north-south green) and returns the average delay "
        "per vehicle and the mean queue of each approach.",
    )
    def simulate(scenario: dict, green_ew: int, green_ns: int) -> dict:
        return simulate_fixed(scenario, green_ew, green_ns)

    def program(scenario: dict) -> Any:
        return simulate(scenario, green_ew, green_ns)

    return FunctionTarget(program, [green_ew, green_ns], input_keys=["scenario"])


def controller_target() -> Any:
    """``traffic_controller``: the controller's source is the code parameter; it starts fixed (30/30)."""
    _uxsim()
    from opto_core.engine.target import FunctionTarget
    from opto_core.kernel.trace import op

    controller = op(fixed_controller, name="controller", trainable=True, parameter_name="controller.code")

    @op(
        name="run_interval",
        description=f"Runs the intersection {INTERVAL} s more with the given greens (east-west, north-south, each "
        f"clamped to [{MIN_GREEN}, {MAX_GREEN}] s) and returns the mean queue of each approach.",
    )
    def run_interval(sim: Any, greens: tuple) -> dict:
        return sim.advance(INTERVAL, (clamp(greens[0]), clamp(greens[1])))

    @op(name="finish", description="Ends the simulation and reports the average delay and the queues.")
    def finish(sim: Any, last_queues: dict, plan: list) -> dict:
        result = sim.finish()
        result["plan"] = [list(p) for p in plan]
        return result

    def program(scenario: dict) -> Any:
        sim = Intersection(dict(scenario), EQUAL_SPLIT)
        greens: Any = EQUAL_SPLIT
        queues = sim.advance(INTERVAL)
        plan = []
        while sim.time < DEMAND_END:
            greens = controller(queues, clamp(greens[0]), clamp(greens[1]))
            plan.append((clamp(greens[0]), clamp(greens[1])))
            queues = run_interval(sim, greens)
        return finish(sim, queues, plan)

    return FunctionTarget(program, [controller], input_keys=["scenario"])


def splits(seed: int, varying: bool) -> tuple[list, list, list]:
    """One scenario: the task is to control this intersection (train = the scenario; no separate test)."""
    example = {"scenario": scenario(seed, varying)}
    return [example], [], [example]
