"""Drop-in integrations with other libraries' training loops.

Each submodule imports its library when it is imported itself, so ``import fastopt``
(and ``import fastopt.integrations``) work without them:

* :mod:`fastopt.integrations.sklearn`: ``MLPClassifier`` and ``MLPRegressor``, scikit-learn's
  estimators whose ``solver="adam"`` and ``solver="sgd"`` updates run on fastopt
  (``pip install "fastopt[integrations]"`` or ``scikit-learn``).
* :mod:`fastopt.integrations.autograd`: ``adam``, ``sgd`` and ``rmsprop`` with the signatures and
  update rules of ``autograd.misc.optimizers`` (``autograd``).
* :mod:`fastopt.integrations.torch`: ``torch.optim.Optimizer`` subclasses (``Adam``, ``AdamW``,
  ``SGD``, ``RMSprop``, ...) stepping CPU tensors zero-copy (``torch``).
* :mod:`fastopt.integrations.thinc`: thinc's ``Optimizer`` (``Adam``, ``SGD``), one fused call
  per ``finish_update`` (``pip install "fastopt[thinc]"``).

See :doc:`/guide/porting` for the one-line change from each library.
"""
