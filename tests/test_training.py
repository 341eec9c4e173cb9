"""nbmlp.training: every option against a hand-written NumPy training loop built on ``net.gradients``."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import assert_close

import nbmlp
from nbmlp.training import Trainer, split_validation, train

HAS_FUSED = importlib.util.find_spec("nbmlp.fused") is not None


def _data(rng, n=23, d_in=3, d_out=2, classes=False):
    X = rng.normal(size=(n, d_in))
    if classes:
        return X, nbmlp.one_hot(rng.integers(0, d_out, size=n), d_out)
    return X, rng.random((n, d_out))


def _net(sizes=(3, 4, 2), **kwargs):
    kwargs.setdefault("seed", 1)
    return nbmlp.MLP(sizes, **kwargs)


def _copy_params(net):
    return [w.copy() for w in net.W], [b.copy() for b in net.b]


def _manual_epoch(net, batches, update):
    """One epoch by hand: for each batch, gradients from net.gradients, then ``update(param, grad, k)``."""
    losses = []
    for Xb, Tb in batches:
        g = net.gradients(Xb, Tb)
        losses.append((g.loss, Xb.shape[0]))
        for k, (param, grad) in enumerate(zip(net.W + net.b, g.W + g.b, strict=True)):
            update(param, grad, k)
    return losses


@pytest.mark.parametrize("compiled", [False, "auto"])
@pytest.mark.parametrize("loss", ["half_sse", "mse", "cross_entropy"])
def test_fit_default_is_full_batch_gradient_descent(loss, compiled, rng):
    X, T = _data(rng, classes=(loss == "cross_entropy"))
    net, ref = _net(loss=loss), _net(loss=loss)
    net.fit(X, T, epochs=7, lr=0.3, compiled=compiled)
    history = []
    for _ in range(7):
        (l, _), = _manual_epoch(ref, [(X, T)], lambda p, g, k: p.__isub__(0.3 * g))
        history.append(l)
    assert_close(np.array(net.loss_history), np.array(history), np.float64, "loss history")
    for a, b in zip(net.W + net.b, ref.W + ref.b, strict=True):
        assert_close(a, b, np.float64, "parameters")


def test_fit_keeps_the_old_signature_and_callback(rng):
    X, T = _data(rng)
    seen = []
    net = _net()
    assert net.fit(X, T, 4, 0.1, callback=lambda e, l: seen.append((e, l))) is net
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    assert [l for _, l in seen] == net.loss_history


@pytest.mark.parametrize("loss", ["half_sse", "mse"])
def test_mini_batches_without_shuffling_walk_the_rows_in_order(loss, rng):
    X, T = _data(rng, n=10)
    net, ref = _net(loss=loss), _net(loss=loss)
    run = train(net, X, T, epochs=3, lr=0.2, batch_size=4, shuffle=False)
    batches = [(X[0:4], T[0:4]), (X[4:8], T[4:8]), (X[8:10], T[8:10])]
    expected = []
    for _ in range(3):
        parts = _manual_epoch(ref, batches, lambda p, g, k: p.__isub__(0.2 * g))
        # a sum loss adds its batch losses; a mean loss averages them with weights n_b / n
        expected.append(sum(l for l, _ in parts) if loss == "half_sse" else sum(l * m / 10 for l, m in parts))
    assert run.steps == 9
    assert_close(np.array(run.loss_history), np.array(expected), np.float64, "epoch losses")
    for a, b in zip(net.W + net.b, ref.W + ref.b, strict=True):
        assert_close(a, b, np.float64, "parameters")


@pytest.mark.parametrize("loss", ["half_sse", "mse", "cross_entropy"])
def test_epoch_loss_of_mini_batches_is_the_loss_of_the_whole_set(loss, rng):
    """With a negligible step, the batches' combined loss equals L(θ) on all rows (sum vs mean scaling)."""
    X, T = _data(rng, n=17, classes=(loss == "cross_entropy"))
    net = _net(loss=loss)
    full = net.loss(X, T)
    run = train(net, X, T, epochs=1, lr=1e-14, batch_size=5, seed=3)
    assert run.loss_history[0] == pytest.approx(full, rel=1e-10)


def test_shuffling_is_seeded(rng):
    X, T = _data(rng, n=20)
    finals = []
    for seed in (0, 0, 1):
        net = _net()
        train(net, X, T, epochs=3, lr=0.3, batch_size=6, seed=seed)
        finals.append(net.W[0].copy())
    np.testing.assert_array_equal(finals[0], finals[1])
    assert not np.array_equal(finals[0], finals[2])


def test_two_runs_continue_like_one(rng):
    X, T = _data(rng, n=20, classes=True)
    a, b = _net(loss="cross_entropy"), _net(loss="cross_entropy")
    options = dict(optimizer="adam", lr=0.01, batch_size=6, seed=5)
    train(a, X, T, epochs=6, **options)
    trainer = Trainer(b, **options)
    trainer.run(X, T, 2).run(X, T, 4)
    assert trainer.epochs_run == 6 and trainer.steps == 24
    for p, q in zip(a.W + a.b, b.W + b.b, strict=True):
        np.testing.assert_array_equal(p, q)


def test_adam_in_training_matches_the_paper_by_hand(rng):
    """Bias correction uses the step count t (per batch), not the epoch."""
    X, T = _data(rng, n=8)
    net, ref = _net(), _net()
    train(net, X, T, epochs=2, optimizer="adam", lr=0.01, batch_size=4, shuffle=False)
    m = [np.zeros_like(p) for p in ref.W + ref.b]
    v = [np.zeros_like(p) for p in ref.W + ref.b]
    t = [0]

    def adam(p, g, k):
        if k == 0:
            t[0] += 1
        m[k] = 0.9 * m[k] + 0.1 * g
        v[k] = 0.999 * v[k] + 0.001 * g * g
        p -= 0.01 * (m[k] / (1 - 0.9 ** t[0])) / (np.sqrt(v[k] / (1 - 0.999 ** t[0])) + 1e-8)

    for _ in range(2):
        _manual_epoch(ref, [(X[:4], T[:4]), (X[4:], T[4:])], adam)
    for a, b in zip(net.W + net.b, ref.W + ref.b, strict=True):
        assert_close(a, b, np.float64, "adam parameters")


def test_nesterov_in_training_matches_by_hand(rng):
    X, T = _data(rng, n=6)
    net, ref = _net(), _net()
    train(net, X, T, epochs=4, optimizer="nesterov", momentum=0.8, lr=0.1)
    vel = [np.zeros_like(p) for p in ref.W + ref.b]

    def nesterov(p, g, k):
        vel[k] = 0.8 * vel[k] - 0.1 * g
        p += 0.8 * vel[k] - 0.1 * g

    for _ in range(4):
        _manual_epoch(ref, [(X, T)], nesterov)
    for a, b in zip(net.W + net.b, ref.W + ref.b, strict=True):
        assert_close(a, b, np.float64, "nesterov parameters")


def test_weight_decay_adds_lambda_w_to_weights_only_and_its_term_to_the_loss(rng):
    X, T = _data(rng, n=9)
    lam, lr = 0.05, 0.2
    net, ref = _net(), _net()
    run = train(net, X, T, epochs=3, lr=lr, weight_decay=lam)
    expected = []
    n_W = len(ref.W)  # params are W1..WL then b1..bL: only the first n_W are decayed
    for _ in range(3):
        penalty = lam * 0.5 * sum(float(np.sum(W**2)) for W in ref.W)
        (l, _), = _manual_epoch(
            ref, [(X, T)], lambda p, g, k: p.__isub__(lr * (g + lam * p) if k < n_W else lr * g))
        expected.append(l + penalty)
    assert_close(np.array(run.loss_history), np.array(expected), np.float64, "loss with decay")
    for a, b in zip(net.W + net.b, ref.W + ref.b, strict=True):
        assert_close(a, b, np.float64, "decayed parameters")


def test_invscaling_schedule(rng):
    X, T = _data(rng, n=5)
    net, ref = _net(), _net()
    train(net, X, T, epochs=4, lr=0.5, lr_schedule="invscaling", power_t=0.5)
    for e in range(1, 5):
        _manual_epoch(ref, [(X, T)], lambda p, g, k, e=e: p.__isub__(0.5 / e**0.5 * g))
    for a, b in zip(net.W + net.b, ref.W + ref.b, strict=True):
        assert_close(a, b, np.float64, "invscaling parameters")


def test_callable_schedule_gets_the_epoch(rng):
    X, T = _data(rng, n=5)
    seen = []
    train(_net(), X, T, epochs=3, lr=0.1, lr_schedule=lambda e: seen.append(e) or 0.1)
    assert seen == [1, 2, 3]
    with pytest.raises(ValueError, match=r"lr_schedule\(1\)"):
        train(_net(), X, T, epochs=1, lr=0.1, lr_schedule=lambda e: -1.0)


def test_adaptive_schedule_divides_by_five_on_a_plateau(rng):
    X, T = _data(rng, n=5)
    # No epoch improves the loss by tol = 100.  scikit-learn's counter: epoch 1 sets the best loss,
    # epochs 2, 3, 4 count 1, 2, 3, and 3 > n_iter_no_change = 2 is a plateau at epoch 4.
    run = train(_net(), X, T, epochs=9, lr=0.5, lr_schedule="adaptive", n_iter_no_change=2, tol=100.0)
    # plateau at epoch 4 -> 0.1, counter restarts; epochs 5, 6, 7 -> plateau -> 0.02; epochs 8, 9 count 1, 2
    assert run.lr == pytest.approx(0.02, rel=1e-15) and run.epochs_run == 9 and not run.converged
    # a rate that would fall below 1e-6 stops training instead
    run = train(_net(), X, T, epochs=9, lr=1e-6, lr_schedule="adaptive", n_iter_no_change=2, tol=100.0)
    assert run.lr == 1e-6 and run.epochs_run == 4 and run.converged


def test_convergence_stops_on_a_training_loss_plateau(rng):
    X, T = _data(rng, n=5)
    run = train(_net(), X, T, epochs=50, lr=1e-6, n_iter_no_change=3, tol=100.0)
    assert run.converged and run.stop_reason == "converged" and run.epochs_run == 5
    run = train(_net(), X, T, epochs=50, lr=1e-6)  # no patience given: all epochs run
    assert not run.converged and run.epochs_run == 50


def test_validation_split_is_stratified_and_seeded():
    y = np.repeat([0, 1, 2], [10, 20, 30])
    X, T = np.arange(60.0)[:, None], nbmlp.one_hot(y)
    Xa, Ta, Xv, Tv = split_validation(X, T, 0.2, np.random.default_rng(0))
    assert np.bincount(Tv.argmax(axis=1)).tolist() == [2, 4, 6]
    assert sorted(np.concatenate([Xa, Xv])[:, 0].tolist()) == list(range(60))
    Xv2 = split_validation(X, T, 0.2, np.random.default_rng(0))[2]
    np.testing.assert_array_equal(Xv, Xv2)


def test_early_stopping_restores_the_best_validation_parameters(rng):
    X, T = _data(rng, n=40, classes=True)
    net = _net(loss="cross_entropy")
    run = train(net, X, T, epochs=400, lr=0.5, optimizer="adam", validation_fraction=0.25, seed=0,
                early_stopping=True, n_iter_no_change=5, tol=0.0)
    assert run.stop_reason == "early_stopping" and run.epochs_run < 400
    assert len(run.validation_loss_history) == run.epochs_run
    best = max(run.validation_score_history)
    assert run.best_validation_score == best
    # the best epoch is more than n_iter_no_change epochs before the end
    assert run.validation_score_history.index(best) < run.epochs_run - 5
    Xv, Tv = run.last_validation_data
    assert Xv.shape[0] == 10
    assert -net.loss(Xv, Tv) == pytest.approx(best, rel=1e-12)  # the best parameters are back


def test_early_stopping_needs_validation_data(rng):
    with pytest.raises(ValueError, match="early_stopping needs validation data"):
        Trainer(_net(), early_stopping=True)


def test_explicit_validation_data_and_custom_score(rng):
    X, T = _data(rng, n=12, classes=True)
    Xv, Tv = _data(rng, n=5, classes=True)
    net = _net(loss="cross_entropy")
    run = train(net, X, T, epochs=3, lr=0.1, validation_data=(Xv, Tv),
                validation_score=lambda n_, A, B: float(np.mean(n_.forward(A).argmax(1) == B.argmax(1))))
    assert len(run.validation_score_history) == 3
    assert run.validation_score_history[-1] == pytest.approx(np.mean(net.forward(Xv).argmax(1) == Tv.argmax(1)))
    assert run.validation_loss_history[-1] == pytest.approx(net.loss(Xv, Tv))


@pytest.mark.parametrize("compiled", [False, "auto"])
@pytest.mark.parametrize("batch_size", [None, 3])
def test_non_finite_loss_stops_and_restores_the_last_finite_parameters(compiled, batch_size, rng):
    X = rng.normal(scale=30.0, size=(6, 3))
    T = rng.normal(size=(6, 2))
    net = _net(activation="identity", input_sigmoid=False)
    kwargs = {"compiled": compiled} if batch_size is None else {"batch_size": batch_size, "shuffle": False}
    with pytest.raises(FloatingPointError, match="non-finite"):
        net.fit(X, T, epochs=5000, lr=5.0, **kwargs)
    for p in net.W + net.b:
        assert np.isfinite(p).all()
    if batch_size is None:
        # full batch: the restored parameters are those of the last recorded (finite) loss
        assert net.loss(X, T) == pytest.approx(net.loss_history[-1], rel=1e-12)
    assert np.isfinite(net.loss_history).all()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"lr": -1.0}, ValueError, "lr"),
        ({"lr": "0.1"}, TypeError, "lr"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 2.5}, TypeError, "batch_size"),
        ({"optimizer": "rmsprop"}, ValueError, "optimizer"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay"),
        ({"lr_schedule": "cosine"}, ValueError, "lr_schedule"),
        ({"validation_fraction": 1.0}, ValueError, "validation_fraction"),
        ({"n_iter_no_change": 0}, ValueError, "n_iter_no_change"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"shuffle": "yes"}, TypeError, "shuffle"),
        ({"compiled": "always"}, ValueError, "compiled"),
        ({"callback": 3}, TypeError, "callback"),
        ({"validation_data": ([[1.0, 2.0]], [[0.0, 1.0]])}, ValueError, r"validation_data\[0\]"),
        ({"momentum": 1.2, "optimizer": "momentum"}, ValueError, "momentum"),
    ],
)
def test_bad_options_are_refused_before_training(kwargs, error, match, rng):
    X, T = _data(rng)
    net = _net()
    before = _copy_params(net)
    with pytest.raises(error, match=match):
        net.fit(X, T, epochs=2, **({"lr": 0.1} | kwargs))
    for a, b in zip(net.W + net.b, before[0] + before[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert net.loss_history == []


def test_bad_data_is_refused_and_caller_arrays_are_untouched(rng):
    X, T = _data(rng)
    X0, T0 = X.copy(), T.copy()
    net = _net()
    with pytest.raises(ValueError, match="X must have 3 columns"):
        net.fit(X[:, :2], T, epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="epochs"):
        net.fit(X, T, epochs=0)
    net.fit(X, T, epochs=2, batch_size=4, optimizer="adam", weight_decay=0.1)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(T, T0)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_numpy_and_loop_engines_train_alike(optimizer, rng):
    X, T = _data(rng, n=15, classes=True)
    nets = [_net(loss="cross_entropy", activation="tanh", engine=e) for e in ("loops", "numpy")]
    for net in nets:
        train(net, X, T, epochs=5, optimizer=optimizer, lr=0.05, batch_size=4, seed=2, weight_decay=0.01)
    for a, b in zip(nets[0].W + nets[0].b, nets[1].W + nets[1].b, strict=True):
        assert_close(a, b, np.float64, optimizer)


def test_float32_training_stays_float32(rng):
    X, T = _data(rng, classes=True)
    net = _net(loss="cross_entropy", dtype="float32")
    train(net, X, T, epochs=3, optimizer="adam", lr=0.01, batch_size=5)
    assert all(p.dtype == np.float32 for p in net.W + net.b)


def test_compiled_true_runs_mini_batches_in_the_compiled_loop(rng):
    X, T = _data(rng)
    run = train(_net(), X, T, epochs=1, lr=0.1, batch_size=4, compiled=True)
    assert run.used_compiled_loop


def test_a_trainer_needs_a_net():
    with pytest.raises(TypeError, match="net must be an nbmlp.MLP"):
        Trainer("x")


@pytest.mark.skipif(not HAS_FUSED, reason="nbmlp.fused (the compiled epoch loop) is not present")
def test_compiled_epoch_loop_is_used_and_agrees(rng):
    X, T = _data(rng)
    fused_net, python_net = _net(), _net()
    from nbmlp import fused

    if not fused.supports(fused_net):
        pytest.skip("nbmlp.fused does not support this network")
    run = train(fused_net, X, T, epochs=20, lr=0.3)
    assert run.used_compiled_loop
    train(python_net, X, T, epochs=20, lr=0.3, compiled=False)
    assert_close(np.array(fused_net.loss_history), np.array(python_net.loss_history), np.float64, "losses")
    for a, b in zip(fused_net.W + fused_net.b, python_net.W + python_net.b, strict=True):
        assert_close(a, b, np.float64, "parameters")
