"""The fast inference paths give the plain Keras model's answers (within 1e-3), or are not used."""

import numpy as np
import pytest

from facexpr.core.errors import ModelError
from facexpr.model.classifier import Classifier, build_network, load_classifier
from facexpr.model.inference import AGREEMENT_TOL, BF16_TOL, has_native_bf16, plan_network
from tests.conftest import shipped_card

RNG = np.random.default_rng(7)
CROPS = RNG.integers(0, 256, (40, 48, 48), dtype=np.uint8)


def _with_trained_statistics(network, seed: int = 0):
    """An untrained network's batch norms are identities; give them a trained net's spread so
    the folding is really exercised."""
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.3, n).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, n).astype(np.float32))
    return network


def _agree(fast: Classifier, reference: Classifier, crops: np.ndarray) -> None:
    assert fast._single_crop_forward() is not None  # the TFLite copy is really the one answering
    expected = reference.predict(crops)
    assert np.abs(fast.predict(crops) - expected).max() < AGREEMENT_TOL  # the batched graph
    one_by_one = np.concatenate([fast.predict(c[None]) for c in crops[:8]])  # the single-crop path
    assert np.abs(one_by_one - expected[:8]).max() < AGREEMENT_TOL


@pytest.mark.parametrize(("flip", "widths"), [(True, (8, 16)), (False, (8, 16)), (True, (4, 4, 4, 4, 8))])
def test_folded_network_agrees_with_keras(flip, widths):
    network = _with_trained_statistics(build_network(widths=widths))
    fast = Classifier(network, flip_average=flip)
    assert fast.backend == "folded"
    _agree(fast, Classifier(network, flip_average=flip, fast=False), CROPS)


def test_tiny_test_model_loaded_through_keras_is_served_folded(tiny_model_path):
    through_keras = load_classifier(tiny_model_path, backend="keras")
    assert through_keras.backend == "folded"
    _agree(through_keras, Classifier(through_keras.network, fast=False), CROPS)


def test_a_network_it_cannot_fold_is_served_by_keras():
    import keras
    from keras import layers

    inputs = keras.Input((48, 48, 1))
    x = layers.Conv2D(4, 3, padding="same")(inputs)
    x = layers.LayerNormalization()(x)  # not a kind the folding knows
    x = layers.GlobalAveragePooling2D()(x)
    odd = keras.Model(inputs, layers.Dense(7, activation="softmax")(x))
    assert plan_network(odd) is None
    classifier = Classifier(odd)
    assert classifier.backend == "keras"
    probs = classifier.predict(CROPS[:3])
    assert probs.shape == (3, 7) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_a_branching_network_is_not_folded():
    import keras
    from keras import layers

    inputs = keras.Input((48, 48, 1))
    a = layers.Conv2D(4, 3, padding="same")(inputs)
    b = layers.Conv2D(4, 3, padding="same")(inputs)
    x = layers.GlobalAveragePooling2D()(layers.Add()([a, b]))
    assert plan_network(keras.Model(inputs, layers.Dense(7, activation="softmax")(x))) is None


@pytest.mark.skipif(shipped_card() is None, reason="no model committed in models/ yet")
def test_shipped_model_fast_paths_agree_with_keras():
    served = load_classifier(backend="keras")
    assert served.backend == "folded"
    _agree(served, Classifier(served.network, fast=False), CROPS)


# ---------------------------------------------------------------- bfloat16 batches (opt-in)

native_bf16 = pytest.mark.skipif(not has_native_bf16(), reason="this CPU has no native bfloat16")


@native_bf16
def test_bfloat16_batches_stay_close_to_float32_and_single_crops_stay_exact():
    network = _with_trained_statistics(build_network(widths=(8, 16)))
    exact = Classifier(network, fast=False)
    bf16 = Classifier(network, precision="bfloat16")
    expected = exact.predict(CROPS)
    batched = bf16.predict(CROPS)
    assert np.abs(batched - expected).max() < BF16_TOL
    assert np.abs(batched - expected).max() > AGREEMENT_TOL / 10  # really computed in bfloat16
    assert np.allclose(batched.sum(axis=1), 1, atol=1e-5)
    # One crop at a time still goes through the float32 TFLite copy.
    assert np.abs(bf16.predict(CROPS[0]) - expected[:1]).max() < AGREEMENT_TOL


def test_bfloat16_without_hardware_support_is_refused_in_words(monkeypatch):
    monkeypatch.setattr("facexpr.model.inference.has_native_bf16", lambda: False)
    with pytest.raises(ModelError, match="no native bfloat16"):
        Classifier(build_network(widths=(8, 16)), precision="bfloat16")


def test_an_unknown_precision_is_refused_in_words():
    with pytest.raises(ModelError, match="float32 or bfloat16"):
        Classifier(build_network(widths=(8, 16)), precision="float16")


def test_bfloat16_needs_the_folded_graph():
    import keras
    from keras import layers

    inputs = keras.Input((48, 48, 1))
    x = layers.LayerNormalization()(layers.Conv2D(4, 3, padding="same")(inputs))
    odd = keras.Model(inputs, layers.Dense(7, activation="softmax")(layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(ModelError, match="cannot run in bfloat16"):
        Classifier(odd, precision="bfloat16")
