"""MLP.predict / predict_proba: class labels, probabilities, and the preprocessing a saved model carries."""

from __future__ import annotations

import numpy as np
import pytest

import nbmlp


def _iris_net(**kw):
    X, y = nbmlp.load_iris()
    mean, scale = X.mean(axis=0), X.std(axis=0)
    net = nbmlp.MLP((4, 6, 3), seed=0, input_sigmoid=False, activation="tanh", loss="cross_entropy", **kw)
    net.fit((X - mean) / scale, nbmlp.one_hot(y, 3), epochs=300, lr=0.5)
    return net, X, y, mean, scale


def test_predict_applies_preprocessing_and_returns_class_labels():
    net, X, y, mean, scale = _iris_net()
    expected_index = net.forward((X - mean) / scale).argmax(axis=1)
    np.testing.assert_array_equal(net.predict((X - mean) / scale), expected_index)  # no preprocessing yet
    net.preprocessing = {"mean": mean, "scale": scale}
    net.classes = np.array(["setosa", "versicolor", "virginica"])
    np.testing.assert_array_equal(net.predict(X), net.classes[expected_index])
    proba = net.predict_proba(X)
    np.testing.assert_allclose(proba, net.forward((X - mean) / scale), rtol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.mean(net.predict(X) == net.classes[y]) > 0.9


def test_identity_output_predicts_values_and_has_no_probabilities():
    X = np.linspace(-1, 1, 20)[:, None]
    net = nbmlp.MLP((1, 4, 1), seed=0, input_sigmoid=False, output_activation="identity", loss="mse")
    assert net.predict(X).shape == (20,)
    np.testing.assert_array_equal(net.predict(X), net.forward(X)[:, 0])
    with pytest.raises(ValueError, match="not probabilities"):
        net.predict_proba(X)


def test_one_sigmoid_output_is_a_binary_classifier():
    X = np.array([[-3.0], [3.0]])
    net = nbmlp.MLP((1, 1), seed=0, input_sigmoid=False)
    net.W[0][...] = 2.0
    p = net.forward(X)[:, 0]
    np.testing.assert_allclose(net.predict_proba(X), np.column_stack([1 - p, p]))
    np.testing.assert_array_equal(net.predict(X), [0, 1])
    net.classes = np.array(["no", "yes"])
    assert net.predict(X).tolist() == ["no", "yes"]


@pytest.mark.parametrize("attr, value, match", [
    ("preprocessing", {"mean": np.zeros(3), "scale": np.ones(4)}, r"preprocessing\['mean'\]"),
    ("preprocessing", {"mean": np.zeros(4), "scale": np.zeros(4)}, "zeros"),
    ("preprocessing", {"mean": np.zeros(4)}, "keys"),
    ("classes", np.array(["a", "b"]), "net.classes must hold 3"),
])
def test_bad_preprocessing_or_classes_are_named(attr, value, match):
    net = nbmlp.MLP((4, 3, 3), seed=0)
    setattr(net, attr, value)
    with pytest.raises(ValueError, match=match):
        net.predict(np.zeros((2, 4)))


def test_a_net_with_classes_predicts_classes_whatever_its_output_layer():
    """The CLI's networks may end in identity (mse on one-hot targets): with classes they still classify."""
    X = np.array([[0.0, 1.0], [1.0, 0.0]])
    net = nbmlp.MLP((2, 2), seed=0, input_sigmoid=False, output_activation="identity", loss="mse")
    net.W[0][...] = np.eye(2)
    assert not net.predicts_classes and net.predict(X).shape == (2, 2)
    net.classes = np.array(["left", "right"])
    assert net.predicts_classes and net.predict(X).tolist() == ["right", "left"]
