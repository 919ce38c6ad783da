"""The stateful, torch-style face: ``Optimizer`` and its parts, the algorithm classes, the lr
schedulers and weight averaging. Built on the pure layer, which never imports from here."""
