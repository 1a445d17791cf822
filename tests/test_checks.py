"""The exercise checks accept right answers, reject the usual mistakes with a hint, and stay quiet."""

import warnings

import checks_zoo as zoo
import pytest
import torch

from tlhelpers import checks, data, imagenet, models, training, utils

EXERCISES = [
    "preprocess",
    "top_k",
    "freeze",
    "count_parameters",
    "freeze_batchnorm",
    "replace_head",
    "build_feature_extractor",
    "trainable_parameters",
    "make_optimizer",
    "train_one_epoch",
    "evaluate",
    "unfreeze",
    "param_groups",
    "split_indices",
]


def reference(name):
    return next(getattr(m, name) for m in (imagenet, models, training, data) if hasattr(m, name))


def check(name):
    return getattr(checks, f"check_{name}")


def own_copy_of_reference(name):
    """The reference's code as if the learner had typed it: no wrapper, no reference marker."""
    body = reference(name).__wrapped__
    return lambda *args, **kwargs: body(*args, **kwargs)


NOTEBOOKS = (
    "01_imagenet_features",
    "02_freezing",
    "03_replacing_the_head",
    "04_training_the_head",
    "05_fine_tuning",
    "06_capstone",
)


def test_every_exercise_has_a_check_naming_its_notebook():
    for name in EXERCISES:
        doc = check(name).__doc__ or ""
        assert any(notebook in doc for notebook in NOTEBOOKS), name


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("name", EXERCISES)
def test_reference_code_passes(name, seed):
    assert check(name)(own_copy_of_reference(name), seed=seed) is None


CORRECT = [(name, fn) for name in EXERCISES for fn in zoo.CORRECT[name]]
WRONG = [(name, fn, keyword) for name in EXERCISES for fn, keyword in zoo.WRONG[name]]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("name", "solution"), CORRECT, ids=[fn.__name__ for _, fn in CORRECT])
def test_alternative_correct_solutions_pass(name, solution, seed):
    assert check(name)(solution, seed=seed) is None


@pytest.mark.parametrize(("name", "solution", "keyword"), WRONG, ids=[fn.__name__ for _, fn, _ in WRONG])
def test_mistakes_fail_with_a_hint(name, solution, keyword):
    with pytest.raises(AssertionError) as failure:
        check(name)(solution)
    assert keyword in str(failure.value)
    assert "reference" not in str(failure.value)


def test_every_exercise_has_correct_wrong_and_rigged_solutions():
    for name in EXERCISES:
        assert zoo.CORRECT[name] and len(zoo.WRONG[name]) >= 3 and name in zoo.RIGGED, name


@pytest.mark.parametrize("name", EXERCISES)
def test_rigged_equality_fails(name):
    with pytest.raises(AssertionError) as failure:
        check(name)(zoo.RIGGED[name])
    assert "reference" not in str(failure.value)


@pytest.mark.parametrize("name", EXERCISES)
def test_the_reference_itself_earns_nothing(name):
    with pytest.raises(AssertionError, match=f"calls tlhelpers.{name}, the reference solution"):
        check(name)(reference(name))
    with pytest.raises(AssertionError, match="reference solution"):
        check(name)(reference(name).__wrapped__)


@pytest.mark.parametrize("name", EXERCISES)
def test_calling_the_reference_earns_nothing(name):
    wrapped = reference(name)

    def learner(*args, **kwargs):
        return wrapped(*args, **kwargs)

    with pytest.raises(AssertionError, match=f"calls tlhelpers.{name}, the reference solution"):
        check(name)(learner)
    assert name not in utils._guarded
    assert utils._reference_calls == []


def test_guard_is_released_when_the_learner_raises():
    def broken(model):
        models.freeze(model)
        raise RuntimeError("oops")

    with pytest.raises(AssertionError, match="reference"):
        checks.check_freeze(broken)
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        checks.check_freeze(lambda model: 1 / 0)
    assert utils._guarded == set() and utils._reference_calls == []


def test_unwritten_exercise_says_so():
    def stub(model):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="freeze is not written yet"):
        checks.check_freeze(stub)


def test_device_hint_only_for_device_errors():
    def global_device(model, loader, optimizer, loss_fn, device):
        raise RuntimeError("Expected all tensors to be on the same device, but found cuda:0 and cpu")

    with pytest.raises(AssertionError, match="device given as argument"):
        checks.check_train_one_epoch(global_device)
    with pytest.raises(AssertionError) as failure:
        checks.check_train_one_epoch(lambda *args: {}["missing"])
    assert "raised KeyError" in str(failure.value) and "Hint" not in str(failure.value)


def test_references_work_normally_outside_checks():
    model = torch.nn.Linear(2, 2)
    assert models.freeze(model) is model and utils._reference_calls == []


def test_checks_leave_rng_grad_mode_and_threads_alone():
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    for name in ("train_one_epoch", "evaluate", "freeze", "replace_head"):
        check(name)(own_copy_of_reference(name))
    with pytest.raises(AssertionError):
        checks.check_evaluate(zoo.evaluate_switching_grad_off_globally)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.is_grad_enabled()
    assert torch.get_num_threads() == threads


def test_checks_are_quiet(capfd):
    def noisy(model):
        warnings.warn("a learner's warning", stacklevel=1)
        return model.requires_grad_(False)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in EXERCISES:
            check(name)(own_copy_of_reference(name))
        checks.check_freeze(noisy)
        with pytest.raises(AssertionError):
            checks.check_replace_head(zoo.replace_head_torchvision_only)
    assert caught == []
    assert capfd.readouterr() == ("", "")


def test_not_a_function_is_refused():
    with pytest.raises(AssertionError, match="expects your function freeze"):
        checks.check_freeze(None)
