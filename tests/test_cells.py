"""Each cell is one spec (harness/cells/): the new cells' steps against references written
here from their papers' (and their authors' code's) equations, the uRNN's unitarity, every
registered cell trained and diagnosed, the options a cell does not read refused, and a cell
registered from a module of its own tested with no other file touched."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

import tasks
from harness import names
from harness.cells import CELLS
from harness.cells.urnn import recurrent, unitary
from harness.clipping import Clipper
from harness.diagnostics import diagnose
from harness.loop import MemoryTracker, train_loop
from harness.models import RecurrentModel
from harness.optimizers import make_optimizer
from harness.schema import ConfigError, OptimConfig, TrainConfig, validate

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

D, H, OUT = 3, 4, 2


def randomized(model: RecurrentModel) -> RecurrentModel:
    """Every parameter drawn anew, so that no term of a step is hidden by a zero init."""
    with torch.no_grad():
        for param in model.parameters():
            param.uniform_(-0.8, 0.8)
    return model


# --- the peephole LSTM ---------------------------------------------------------------------


def lasagne_lstm(model: RecurrentModel, inputs: torch.Tensor) -> torch.Tensor:
    """Lasagne's LSTMLayer step (lasagne/layers/recurrent.py), peepholes on, in its own
    notation: gates = x W_in + h W_hid + b, sliced (ingate, forgetgate, cell, outgate); the
    peepholes add c_{t-1} ⊙ W_cell_to_ingate and ⊙ W_cell_to_forgetgate, and the new c_t ⊙
    W_cell_to_outgate. Returns the hidden states [B, L, H]."""
    w = model.weights(0)
    w_in, w_hid, b = w["weight_ih"].T, w["weight_hh"].T, w["bias_ih"] + w["bias_hh"]
    h = c = inputs.new_zeros(inputs.shape[0], H)
    states = []
    for t in range(inputs.shape[1]):
        gates = inputs[:, t] @ w_in + h @ w_hid + b
        ingate, forgetgate, cell_input, outgate = (gates[:, k * H:(k + 1) * H] for k in range(4))
        ingate = torch.sigmoid(ingate + c * w["peephole_i"])
        forgetgate = torch.sigmoid(forgetgate + c * w["peephole_f"])
        c = forgetgate * c + ingate * torch.tanh(cell_input)
        outgate = torch.sigmoid(outgate + c * w["peephole_o"])
        h = outgate * torch.tanh(c)
        states.append(h)
    return torch.stack(states, dim=1)


def complex_rnn_lstm(model: RecurrentModel, inputs: torch.Tensor) -> torch.Tensor:
    """The uRNN authors' LSTM recurrence (amarshah/complex_RNN models.py `LSTM`), their names:
    input_t = σ(x W_i + h U_i + b_i), candidate_t = tanh(x W_c + h U_c + b_c), forget_t =
    σ(x W_f + h U_f + b_f), state_t = input_t candidate_t + forget_t state_prev, output_t =
    σ(x W_o + h U_o + state_t V_o + b_o), h_t = output_t tanh(state_t)."""
    w = model.weights(0)
    b = w["bias_ih"] + w["bias_hh"]
    blocks = {name: k for k, name in enumerate("ifco")}  # torch's order i, f, g (= c), o

    def part(matrix: torch.Tensor, gate: str) -> torch.Tensor:
        k = blocks[gate]
        return matrix[k * H:(k + 1) * H].T

    h = state = inputs.new_zeros(inputs.shape[0], H)
    v_o = w["peephole_o"].T  # their V_o: state_t V_o
    states = []
    for t in range(inputs.shape[1]):
        x = inputs[:, t]

        def pre(gate: str, x: torch.Tensor = x, h: torch.Tensor = h) -> torch.Tensor:
            k = blocks[gate]
            return x @ part(w["weight_ih"], gate) + h @ part(w["weight_hh"], gate) + \
                b[k * H:(k + 1) * H]

        input_t, forget_t = torch.sigmoid(pre("i")), torch.sigmoid(pre("f"))
        state = input_t * torch.tanh(pre("c")) + forget_t * state
        output_t = torch.sigmoid(pre("o") + state @ v_o)
        h = output_t * torch.tanh(state)
        states.append(h)
    return torch.stack(states, dim=1)


@pytest.mark.parametrize(("peephole", "reference"), [("diagonal", lasagne_lstm),
                                                      ("output", complex_rnn_lstm)])
def test_peephole_lstm_step_is_its_sources(peephole: str, reference: Callable) -> None:
    torch.manual_seed(0)
    model = randomized(RecurrentModel("lstm_peephole", D, OUT, H,
                                      options={"peephole": peephole})).double()
    inputs = torch.randn(5, 3, D, dtype=torch.float64)  # a 3-step example
    ours = torch.stack(model.unrolled(inputs).hidden[0], dim=1)
    torch.testing.assert_close(ours, reference(model, inputs), rtol=1e-12, atol=1e-12)


def test_peephole_inits_are_their_sources() -> None:
    """Lasagne's W_cell ~ N(0, 0.1²); the uRNN authors' V_o Glorot-uniform U(±sqrt(6 / 2H))."""
    torch.manual_seed(1)
    diagonal = RecurrentModel("lstm_peephole", D, OUT, 400, options={"peephole": "diagonal"})
    values = torch.cat([diagonal.weights(0)[f"peephole_{g}"].detach() for g in "ifo"])
    assert abs(float(values.std()) - 0.1) < 0.005 and abs(float(values.mean())) < 0.01
    output = RecurrentModel("lstm_peephole", D, OUT, 400, options={"peephole": "output"})
    v_o = output.weights(0)["peephole_o"].detach()
    bound = math.sqrt(6 / 800)
    assert float(v_o.abs().max()) <= bound and float(v_o.abs().max()) > 0.99 * bound
    assert set(output.weights(0)) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                      "peephole_o"}


# --- the uRNN --------------------------------------------------------------------------


def paper_unitary(w: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    """W = D3 R2 F⁻¹ D2 Π R1 F D1 (Arjovsky et al. 2016, eq. 6) as a complex n x n matrix:
    D_k = diag(exp(i θ_k)); F the unitary DFT, F_jk = exp(−2πi jk / n) / sqrt(n); R = I −
    2 u u* / ‖u‖²; (Π h)_j = h_perm[j]. The authors' code keeps v = the conjugate of u."""
    j = torch.arange(n, dtype=torch.float64)
    fourier = torch.exp(-2j * math.pi * torch.outer(j, j) / n) / math.sqrt(n)

    def diag(theta: torch.Tensor) -> torch.Tensor:
        return torch.diag(torch.exp(1j * theta.double()))

    def reflection(v: torch.Tensor) -> torch.Tensor:
        u = torch.complex(v[:n].double(), -v[n:].double())
        return torch.eye(n, dtype=torch.complex128) - 2 * torch.outer(u, u.conj()) / \
            (u.abs() ** 2).sum()

    perm = torch.eye(n, dtype=torch.complex128)[w["permutation"]]
    return (diag(w["theta3"]) @ reflection(w["reflection2"]) @ fourier.conj().T
            @ diag(w["theta2"]) @ perm @ reflection(w["reflection1"]) @ fourier
            @ diag(w["theta1"]))


def test_urnn_step_is_the_paper() -> None:
    """h_t = modReLU(W h_{t-1} + V x_t), h_0 learned, on a 3-step example; modReLU(z) =
    z max(|z| + b, 0) / (|z| + 1e-5) (the authors' epsilon)."""
    torch.manual_seed(2)
    model = randomized(RecurrentModel("urnn", D, OUT, H, activation="modrelu",
                                      learn_init_state=True)).double()
    w = model.weights(0)
    matrix = paper_unitary(w, H)
    inputs = torch.randn(5, 3, D, dtype=torch.float64)
    h = torch.complex(w["h0"][:H], w["h0"][H:]).expand(5, H)
    expected = []
    for t in range(3):
        projected = inputs[:, t] @ w["weight_ih"].T
        z = h @ matrix.T + torch.complex(projected[:, :H], projected[:, H:])
        h = z * torch.relu(z.abs() + w["modrelu_bias"]) / (z.abs() + 1e-5)
        expected.append(torch.cat((h.real, h.imag), dim=1))
    ours = model.unrolled(inputs)
    torch.testing.assert_close(torch.stack(ours.hidden[0], 1), torch.stack(expected, 1),
                               rtol=1e-12, atol=1e-12)
    real = torch.cat((torch.cat((matrix.real, -matrix.imag), 1),
                      torch.cat((matrix.imag, matrix.real), 1)))
    torch.testing.assert_close(recurrent(w, H), real, rtol=1e-12, atol=1e-12)


def test_urnn_recurrence_is_unitary_and_keeps_the_norm() -> None:
    torch.manual_seed(3)
    model = RecurrentModel("urnn", D, OUT, 32, activation="modrelu")
    w64 = {k: v.detach().double() if v.is_floating_point() else v
           for k, v in model.weights(0).items()}
    matrix = recurrent(w64, 32)
    torch.testing.assert_close(matrix.T @ matrix, torch.eye(64, dtype=torch.float64),
                               rtol=0, atol=1e-13)
    # float32: about ten roundings of 2^-24 per step, over 1,000 steps
    for weights, dtype, tolerance in ((w64, torch.float64, 1e-12),
                                      (model.weights(0), torch.float32, 2e-4)):
        h = torch.randn(8, 64, dtype=dtype)
        start = h.norm(dim=1)
        with torch.no_grad():
            for _ in range(1000):  # zero input: h <- W h
                h = unitary(weights, h)
        relative = float(((h.norm(dim=1) - start) / start).abs().max())
        assert relative < tolerance, (dtype, relative)


def test_urnn_gradients_are_exact() -> None:
    torch.manual_seed(4)
    model = RecurrentModel("urnn", 2, 2, 3, activation="modrelu",
                           learn_init_state=True).double()
    inputs = torch.randn(2, 3, 2, dtype=torch.float64)
    params = list(model.parameters())

    def outputs(*values: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, dict(zip(
            [n for n, _ in model.named_parameters()], values, strict=True)), (inputs,))

    assert torch.autograd.gradcheck(outputs, tuple(p.detach().requires_grad_() for p in params))


def test_urnn_inits_are_the_authors() -> None:
    torch.manual_seed(5)
    n = 500
    model = RecurrentModel("urnn", 10, 9, n, activation="modrelu", learn_init_state=True)
    w = {k: v.detach() for k, v in model.weights(0).items()}
    for key, bound in (("theta1", math.pi), ("modrelu_bias", 0.01),
                       ("reflection1", math.sqrt(6 / (2 + 2 * n))),
                       ("weight_ih", math.sqrt(6 / (10 + 2 * n))), ("h0", math.sqrt(3 / 2 / n))):
        assert 0.98 * bound < float(w[key].abs().max()) <= bound, key
    assert sorted(w["permutation"].tolist()) == list(range(n))


# --- every registered cell -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(CELLS))
def test_every_cell_trains_and_is_diagnosed(name: str) -> None:
    """A few training steps reach every parameter; the diagnostics profile every time step
    and log the cell's spectral blocks and gate metrics."""
    spec = CELLS[name]
    task = tasks.make_task("delayed_recall", gap=3)
    torch.manual_seed(6)
    model = RecurrentModel(name, task.input_size, task.output_size, 8,
                           activation=spec.activations[0], learn_init_state=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(steps=5, batch_size=8, log_every=5, eval_every=5, eval_batch_size=16,
                      profile_batch_size=4)
    tracker = MemoryTracker()
    result = train_loop(task, model, make_optimizer(model, OptimConfig(lr=1e-2)),
                        Clipper("none", 1.0), cfg, tracker, seed=0)
    assert result.steps_run == 5 and math.isfinite(result.final_eval_loss)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"never updated: {unchanged}"
    diagnosis = diagnose(model, task, tasks.make_task("delayed_recall", gap=3).sample(
        4, torch.Generator().manual_seed(0), split="eval"), 5)
    (profile,) = diagnosis.profiles
    assert len(profile.grad_norm) == task.seq_len and bool((profile.grad_norm > 0).any())
    expected = {names.block_key(names.SPECTRAL_RADIUS, 0, b) for b in spec.blocks} \
        if spec.dynamics is None else {key + "_l0" for key in spec.dynamics(model.weights(0), 8)}
    expected |= {key for m in spec.gate_metrics for key in (m.mean, m.saturated)}
    assert expected <= set(diagnosis.metrics)
    assert expected <= set(tracker.history)  # logged at the profile steps


BAD_OPTIONS = [
    ("model=urnn", "model.activation=tanh", r"^model.activation: urnn takes modrelu, got tanh$"),
    ("model=urnn", "model.init=orthogonal", r"^model.init: urnn has no plain recurrent matrix"),
    ("model=urnn", "model.chrono=true", r"^model.chrono: applies to gated cells"),
    ("model=gru", "model.forget_bias=1", r"^model.forget_bias: is not read by gru \(only by "),
    ("model=lstm", "model.peephole=output", r"^model.peephole: is not read by lstm \(only by "
                                            r"lstm_peephole\)"),
    ("model=rnn", "model.init=sparse", r"^model.init_nonzero: must be in \[1, model.hidden_size"
                                       r"=8\], got 15$"),
    ("model=rnn", "model.init_radius=0", r"^model.init_radius: must be > 0, got 0"),
    ("model=gru", "model.name=transformer", r"^model.name: unknown cell 'transformer'; choose "),
]


@pytest.mark.parametrize(("option", "override", "message"), BAD_OPTIONS)
def test_an_option_a_cell_does_not_take_is_refused(make_cfg: Callable[..., DictConfig],
                                                    option: str, override: str,
                                                    message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(option, override))


# --- a new cell is one module ----------------------------------------------------------

TOY_CELL = '''"""A toy gated leaky integrator: z = σ(W_z x + U_z h + b_z),
h' = z h + (1 − z) tanh(W x + U h + b). Defined and registered here alone."""

from harness.cells import Cell, Gate, GateMetric, register
from harness.cells.ops import clip_grad, linear


def step(w, x, state, ctx):
    (h,) = state
    pre = clip_grad(x + linear(h, w["weight_hh"], w["bias_hh"]), ctx.clip)
    z_pre, n_pre = pre.chunk(2, dim=-1)
    z = z_pre.sigmoid()
    return (z * h + (1 - z) * n_pre.tanh(),), {"z": z}


def shapes(input_size, hidden, options):
    return {"weight_ih": (2 * hidden, input_size), "weight_hh": (2 * hidden, hidden),
            "bias_ih": (2 * hidden,), "bias_hh": (2 * hidden,)}


def setup(params, hidden, options):
    import torch

    with torch.no_grad():
        for param in params.values():
            param.uniform_(-0.3, 0.3)
    return {}


register(Cell("toy", "a gated leaky integrator", (Gate("z", "leak gate"), Gate("n", "input")),
              step, extra=shapes, setup=setup, gate_metrics=(
                  GateMetric("z", "toy_leak_mean", "toy_leak_saturated"),)))
'''


@pytest.fixture
def toy_cell(tmp_path: Path) -> Iterator[None]:
    """harness/cells' registry with a cell from a module outside the package, restored after."""
    path = tmp_path / "toy_cell.py"
    path.write_text(TOY_CELL)
    module_spec = importlib.util.spec_from_file_location("toy_cell", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    try:
        yield
    finally:
        CELLS.pop("toy", None)
        sys.modules.pop("toy_cell", None)


def test_a_new_cell_is_one_module(toy_cell: None, make_cfg: Callable[..., DictConfig],
                                  store_uri: str, tmp_path: Path) -> None:
    """Registered from its own module: it validates, trains through harness-train's path
    into MLflow, is profiled, logs its gate metrics and its parameter count, and shows in
    the report."""
    from harness.report import build_report
    from harness.train import train

    cfg = make_cfg("model=gru", "model.name=toy", "experiment_name=cells", "task=delayed_recall",
                   "task.gap=3", "train.eval_every=10")
    assert validate(cfg).model.name == "toy"
    result = train(cfg)
    assert result.steps_run > 0 and result.profiles
    client = MlflowClient(store_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cells").experiment_id])
    assert run.data.params["model.name"] == "toy"
    assert {"toy_leak_mean", "toy_leak_saturated", names.block_key(names.SPECTRAL_RADIUS, 0, "z"),
            names.block_key(names.SPECTRAL_RADIUS, 0, "n")} <= set(run.data.metrics)
    # toy's own: 2·8·(D + 8 + 2) and the readout
    task = tasks.make_task("delayed_recall", gap=3)
    expected = 2 * 8 * (task.input_size + 8 + 2) + task.output_size * 9
    assert run.data.metrics[names.PARAMETER_COUNT] == expected
    page = build_report("cells", store_uri, tmp_path / "reports")
    with (page.parent / "runs.csv").open() as rows:
        (row,) = csv.DictReader(rows)
    assert row[names.MODEL] == "toy"
    assert "toy-tanh-noclip" in page.read_text()  # its configuration's label
