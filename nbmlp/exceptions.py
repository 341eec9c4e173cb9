"""The exception and warning classes nbmlp's estimators raise: scikit-learn's own when it is installed.

``NotFittedError``, ``ConvergenceWarning`` and ``DataConversionWarning`` subclass
``sklearn.exceptions``' classes of the same names when scikit-learn can be
imported, so ``except sklearn.exceptions.NotFittedError`` and
``warnings.filterwarnings("ignore", category=sklearn.exceptions.ConvergenceWarning)``
catch nbmlp's too.  Without scikit-learn they derive from the same builtin bases
(NotFittedError is a ValueError and an AttributeError, the warnings UserWarnings).

The classes are built on first use (PEP 562 module ``__getattr__``): importing
scikit-learn takes about a second, and ``import nbmlp`` should not pay it.
"""

from __future__ import annotations

import importlib.util

#: name -> (scikit-learn base's name, builtin bases without scikit-learn, docstring)
CLASSES = {
    "NotFittedError": ("NotFittedError", (ValueError, AttributeError),
                       "The estimator is used before ``fit``."),
    "ConvergenceWarning": ("ConvergenceWarning", (UserWarning,),
                           "``max_iter`` epochs ran before the loss (or validation score) stopped improving "
                           "by ``tol``."),
    "DataConversionWarning": ("DataConversionWarning", (UserWarning,),
                              "The input was converted: e.g. a column-vector y where a 1-D array was expected."),
}


def _build(name):
    base_name, builtin_bases, doc = CLASSES[name]
    bases = builtin_bases
    if importlib.util.find_spec("sklearn") is not None:
        from sklearn import exceptions as sklearn_exceptions

        bases = (getattr(sklearn_exceptions, base_name),)
    return type(name, bases, {"__doc__": doc, "__module__": __name__})


def __getattr__(name):
    if name not in CLASSES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = _build(name)
    globals()[name] = cls
    return cls


__all__ = list(CLASSES)
