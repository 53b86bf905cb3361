"""The modern linear recurrences (harness/cells/minimal.py, harness/cells/lru.py): each step
against a reference written here from its paper's equations on a 3-step example, the LRU's
ring init and normalization, their own diagnostics in place of the spectral radius, the options
they refuse, and the modern_vs_classic preset (every configuration composes, at matched
parameter counts; a shrunken copy runs end to end)."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers.cli import TRAIN, harness_train, jobs_and_sweeps
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, open_dict

import tasks
from harness import names, resources
from harness.diagnostics import diagnose
from harness.models import RecurrentModel
from harness.schema import PROJECT_ROOT, ConfigError, register, validate

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

D, H, OUT, B = 3, 4, 2, 5
PRESET = "modern_vs_classic"


def model_of(cell: str, seed: int, **kwargs: object) -> RecurrentModel:
    """A float64 model whose every parameter is drawn anew (no term hidden by its init)."""
    torch.manual_seed(seed)
    model = RecurrentModel(cell, D, OUT, H, learn_init_state=True, **kwargs).double()
    with torch.no_grad():
        for param in model.parameters():
            param.uniform_(-0.8, 0.8)
    return model


def assert_unrolled(model: RecurrentModel, inputs: torch.Tensor, states: list[torch.Tensor],
                    gate: str, gates: list[torch.Tensor]) -> None:
    """The model's h_t and its step's gate `gate` at every t are the reference's."""
    unrolled = model.unrolled(inputs)
    torch.testing.assert_close(torch.stack(unrolled.hidden[0], 1), torch.stack(states, 1),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.stack([g[gate] for g in unrolled.gates[0]]),
                               torch.stack(gates), rtol=1e-12, atol=1e-12)


def test_mingru_step_is_the_paper() -> None:
    """Feng et al. 2024, minGRU: z_t = σ(Linear_z(x_t)), h̃_t = Linear_h(x_t),
    h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t."""
    model = model_of("mingru", 0)
    w = model.weights(0)
    inputs = torch.randn(B, 3, D, dtype=torch.float64)
    h, expected, gates = w["h0"].expand(B, H), [], []
    for t in range(3):
        z = torch.sigmoid(inputs[:, t] @ w["weight_ih"][:H].T + w["bias_ih"][:H])
        candidate = inputs[:, t] @ w["weight_ih"][H:].T + w["bias_ih"][H:]
        h = (1 - z) * h + z * candidate
        expected.append(h)
        gates.append(z)
    assert_unrolled(model, inputs, expected, "z", gates)


def test_minlstm_step_is_the_paper() -> None:
    """Feng et al. 2024, minLSTM: f_t = σ(Linear_f(x_t)), i_t = σ(Linear_i(x_t)),
    f'_t = f_t / (f_t + i_t), i'_t = i_t / (f_t + i_t), h̃_t = Linear_h(x_t),
    h_t = f'_t ⊙ h_{t−1} + i'_t ⊙ h̃_t."""
    model = model_of("minlstm", 1)
    w = model.weights(0)
    inputs = torch.randn(B, 3, D, dtype=torch.float64)

    def linear(x: torch.Tensor, block: int) -> torch.Tensor:
        rows = slice(block * H, (block + 1) * H)
        return x @ w["weight_ih"][rows].T + w["bias_ih"][rows]

    h, expected, forgets = w["h0"].expand(B, H), [], []
    for t in range(3):
        f, i = torch.sigmoid(linear(inputs[:, t], 0)), torch.sigmoid(linear(inputs[:, t], 1))
        f_prime, i_prime = f / (f + i), i / (f + i)
        h = f_prime * h + i_prime * linear(inputs[:, t], 2)
        expected.append(h)
        forgets.append(f_prime)
    assert_unrolled(model, inputs, expected, "f", forgets)


def test_lru_step_and_readout_are_the_paper() -> None:
    """Orvieto et al. 2023, in complex arithmetic: λ = exp(−exp(ν) + i exp(θ)), γ = exp(γ_log),
    x_t = λ ⊙ x_{t−1} + γ ⊙ (B u_t), B = B_re + i B_im; the readout is Re(C x_t) + b, and Λ as
    a real matrix acts on [Re x | Im x]."""
    model = model_of("lru", 2)
    w = model.weights(0)
    lam = torch.exp(-torch.exp(w["nu_log"]) + 1j * torch.exp(w["theta_log"]))
    gamma = torch.exp(w["gamma_log"])
    b_matrix = torch.complex(w["weight_ih"][:H], w["weight_ih"][H:])
    readout = model.readout.weight
    c_matrix = torch.complex(readout[:, :H], -readout[:, H:])
    inputs = torch.randn(B, 3, D, dtype=torch.float64)
    x = torch.complex(w["h0"][:H], w["h0"][H:]).expand(B, H)
    states, outputs = [], []
    for t in range(3):
        x = lam * x + gamma * (inputs[:, t].to(torch.complex128) @ b_matrix.T)
        states.append(torch.cat((x.real, x.imag), dim=1))
        outputs.append((x @ c_matrix.T).real + model.readout.bias)
    unrolled = model.unrolled(inputs)
    torch.testing.assert_close(torch.stack(unrolled.hidden[0], 1), torch.stack(states, 1),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(unrolled.outputs, torch.stack(outputs, 1), rtol=1e-12,
                               atol=1e-12)
    (_, _, matrix), = model.recurrent_matrices()
    state = torch.randn(2 * H, dtype=torch.float64)
    turned = lam * torch.complex(state[:H], state[H:])
    torch.testing.assert_close(matrix @ state, torch.cat((turned.real, turned.imag)),
                               rtol=1e-12, atol=1e-12)


def test_lru_ring_init_and_normalization() -> None:
    """|λ| in [r_min, r_max], |λ|² uniform there (the ring's area), phase in [0, 2π),
    γ = sqrt(1 − |λ|²), B_re and B_im ~ N(0, 1/(2D))."""
    r_min, r_max, n = 0.4, 0.8, 4000
    torch.manual_seed(3)
    model = RecurrentModel("lru", 50, OUT, n, options={"r_min": r_min, "r_max": r_max})
    w = {key: value.detach().double() for key, value in model.weights(0).items()}
    modulus = torch.exp(-torch.exp(w["nu_log"]))
    assert r_min <= float(modulus.min()) and float(modulus.max()) <= r_max
    # uniform |λ|² on [r_min², r_max²]: mean 0.4, sd 0.48 / sqrt(12) / sqrt(n) = 0.0022
    assert abs(float((modulus ** 2).mean()) - (r_min ** 2 + r_max ** 2) / 2) < 0.01
    assert float((modulus ** 2).min()) < r_min ** 2 + 0.01 and \
        float((modulus ** 2).max()) > r_max ** 2 - 0.01
    phase = torch.exp(w["theta_log"])
    assert 0 <= float(phase.min()) < 0.01 and 2 * math.pi - 0.01 < float(phase.max()) < \
        2 * math.pi
    torch.testing.assert_close(torch.exp(w["gamma_log"]), torch.sqrt(1 - modulus ** 2),
                               rtol=1e-6, atol=0)
    assert abs(float(w["weight_ih"].std()) - 1 / math.sqrt(100)) < 0.002


def test_lru_dynamics_replace_the_spectral_radius() -> None:
    """The diagnostics log |λ|'s min, median and max per layer, and no spectral radius."""
    task = tasks.make_task("delayed_recall", gap=3)
    torch.manual_seed(4)
    model = RecurrentModel("lru", task.input_size, task.output_size, 9, num_layers=2)
    batch = task.sample(4, torch.Generator().manual_seed(0), split="eval")
    metrics = diagnose(model, task, batch, 0).metrics
    assert not any(key.startswith(names.SPECTRAL_RADIUS) for key in metrics)
    for layer in (0, 1):
        modulus = torch.exp(-torch.exp(model.weights(layer)["nu_log"].detach()))
        assert metrics[f"{names.LAMBDA_MODULUS_MIN}_l{layer}"] == float(modulus.min())
        assert metrics[f"{names.LAMBDA_MODULUS_MEDIAN}_l{layer}"] == float(modulus.median())
        assert metrics[f"{names.LAMBDA_MODULUS_MAX}_l{layer}"] == float(modulus.max())
        assert 0.9 <= float(modulus.min()) and float(modulus.max()) <= 0.999  # the defaults


@pytest.mark.parametrize(("cell", "gate", "mean", "saturated"), [
    ("mingru", "z", names.MINGRU_UPDATE_GATE_MEAN, names.MINGRU_UPDATE_GATE_SATURATED),
    ("minlstm", "f", names.MINLSTM_FORGET_GATE_MEAN, names.MINLSTM_FORGET_GATE_SATURATED)])
def test_minimal_cells_report_their_gates_not_a_spectrum(cell: str, gate: str, mean: str,
                                                         saturated: str) -> None:
    task = tasks.make_task("delayed_recall", gap=3)
    torch.manual_seed(5)
    model = RecurrentModel(cell, task.input_size, task.output_size, 6)
    with torch.no_grad():  # some gates saturated, some not
        model.weights(0)["bias_ih"].uniform_(-6, 6)
    batch = task.sample(4, torch.Generator().manual_seed(0), split="eval")
    metrics = diagnose(model, task, batch, 0).metrics
    assert not any(key.startswith(names.SPECTRAL_RADIUS) for key in metrics)
    with torch.no_grad():
        values = torch.stack([g[gate] for g in model.double().unrolled(
            batch.inputs.double()).gates[0]])
    assert metrics[mean] == pytest.approx(float(values.mean()), rel=1e-12)
    share = float(((values < 0.05) | (values > 0.95)).double().mean())
    assert 0 < share < 1 and metrics[saturated] == pytest.approx(share, rel=1e-12)


BAD_OPTIONS = [
    (("model=lru", "model.activation=relu"), r"^model.activation: lru takes identity, got relu$"),
    (("model=mingru", "model.forget_bias=1"), r"^model.forget_bias: is not read by mingru"),
    (("model=lru", "model.r_min=0.9", "model.r_max=0.5"),
     r"^model.r_min: must be < model.r_max=0.5, got 0.9$"),
    (("model=lru", "model.r_min=-0.1"), r"^model.r_min: must be >= 0, got -0.1$"),
    (("model=lru", "model.r_max=1.5"), r"^model.r_max: must be <= 1 .*, got 1.5$"),
    (("model=minlstm", "model.r_min=0.5"),
     r"^model.r_min: is not read by minlstm \(only by lru\)"),
    (("model=mingru", "model.init=orthogonal"), r"^model.init: mingru has no plain recurrent "),
    (("model=minlstm", "model.chrono=true"), r"^model.chrono: applies to gated cells"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_OPTIONS)
def test_an_option_the_cell_does_not_take_is_refused(make_cfg: Callable[..., DictConfig],
                                                     overrides: tuple[str, ...],
                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(*overrides))


def test_cli_refuses_an_inverted_ring_in_one_line(tmp_path: Path,
                                                  cli_env: dict[str, str]) -> None:
    db = tmp_path / "mlflow.db"
    done = harness_train("model=lru", "model.r_min=0.9", "model.r_max=0.5",
                         f"tracking.uri=sqlite:///{db}", cwd=tmp_path, env=cli_env)
    assert done.returncode == 2
    assert [line for line in done.stderr.splitlines() if line.strip()] == \
        ["harness-train: invalid config: model.r_min: must be < model.r_max=0.5, got 0.9"]
    assert not db.exists()


# --- the preset ------------------------------------------------------------------------


def compose_preset(*overrides: str) -> DictConfig:
    register()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"experiment={PRESET}", *overrides],
                       return_hydra_config=True)


def test_preset_compares_every_cell_on_both_tasks_at_matched_parameter_counts() -> None:
    """Every configuration validates at both ends of the ladder, each task has the six cells,
    and their parameter counts lie within 10% of each other."""
    preset = compose_preset()
    configurations = [c.split() for c in preset.hydra.sweeper.configurations]
    counts: dict[str, dict[str, int]] = {}
    for overrides in configurations:
        for gap in (preset.frontier.gap_min, preset.frontier.gap_max):
            cfg = compose_preset(*overrides, f"task.gap={gap}")
            with open_dict(cfg):
                del cfg["hydra"]
            spec = validate(cfg)
        task = spec.task.build()
        count = resources.shape_of(spec.model, task.input_size, task.output_size).parameters
        counts.setdefault(spec.task.name, {})[spec.model.name] = count
    assert set(counts) == {"delayed_recall", "copy"}
    for task_counts in counts.values():
        assert set(task_counts) == {"rnn", "lstm", "gru", "mingru", "minlstm", "lru"}
        assert max(task_counts.values()) <= 1.1 * min(task_counts.values()), task_counts
    assert preset.frontier.n >= 3


@pytest.mark.slow
def test_shrunken_preset_runs_end_to_end(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """One rung, one seed, 20 steps: every configuration runs and logs its parameter count."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = subprocess.run(
        [*TRAIN, "-m", f"experiment={PRESET}", "frontier.gap_min=3", "frontier.gap_max=3",
         "frontier.m=1", "frontier.n=1", "frontier.lrs=null", "train.steps=20",
         "train.eval_every=10", "train.eval_batch_size=32", "train.profile_batch_size=4",
         f"tracking.uri={uri}", f"report.out_dir={tmp_path}/reports",
         f"hydra.sweep.dir={tmp_path}/sweep", f"train.checkpoint_dir={tmp_path}/checkpoints"],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs, sweeps = jobs_and_sweeps(MlflowClient(uri), PRESET)
    assert len(sweeps) == 1 and len(runs) == 12
    assert {(r.data.params[names.TASK], r.data.params[names.MODEL]) for r in runs} == {
        (task, cell) for task in ("delayed_recall", "copy")
        for cell in ("rnn", "lstm", "gru", "mingru", "minlstm", "lru")}
    assert all(r.data.metrics[names.PARAMETER_COUNT] > 0 for r in runs)
    assert "Frontier (" in done.stdout
    assert (tmp_path / "reports" / PRESET / "index.html").exists()


def test_cell_benchmark_times_every_cell_at_matched_counts() -> None:
    """benchmarks.cells on a tiny gap: one row per (comparison, cell), the matched counts
    within 10% of the GRU's at hidden 64, every time positive, the GRU the ratios' unit."""
    from benchmarks.cells import MODELS, matched_hidden, measure

    rows = measure(gap=2, batch_size=2, steps=1, rounds=1)
    assert [(r["comparison"], r[names.MODEL]) for r in rows] == \
        [(c, m) for c in ("parameters", "hidden") for m in MODELS]
    matched = [r for r in rows if r["comparison"] == "parameters"]
    gru = next(int(r[names.PARAMETER_COUNT]) for r in matched if r[names.MODEL] == "gru")
    assert all(abs(int(r[names.PARAMETER_COUNT]) - gru) <= 0.1 * gru for r in matched)
    assert {r[names.HIDDEN_SIZE] for r in rows if r["comparison"] == "hidden"} == {64}
    assert all(float(r["seconds_per_step"]) > 0 for r in rows)
    assert {r["ratio_to_gru"] for r in rows if r[names.MODEL] == "gru"} == {1.0}
    task = tasks.make_task("delayed_recall", gap=20)
    assert matched_hidden("mingru", 16648, task.input_size, task.output_size) == 362
