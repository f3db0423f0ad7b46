"""Getting models out of untrusted files: safe loading and weight extraction, after the scan.

This stage comes last in the flow (container -> pickle -> machine -> program -> rules -> report, then here):

* :mod:`~picklewarden.extract.converting` reads the *program* a pickle would run and turns its tensor
  rebuilds into safetensors, reading raw storage bytes from the container. Nothing from the file is ever
  executed or imported, and torch is not needed.
* :mod:`~picklewarden.extract.loading` is a drop-in for ``torch.load``: it scans the exact bytes it then
  hands to torch's restricted (``weights_only``) unpickler, widened only by the globals the scan judged safe
  or the caller trusts.

The public entry points are ``picklewarden.convert`` and ``picklewarden.load``. The modules here are not
named ``convert``/``load`` on purpose: a submodule ``picklewarden.convert`` would replace the function of
that name on the package as soon as anything imported it.
"""
