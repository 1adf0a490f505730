"""The networks a trial trains: the models (`models.MODELS`), K of them fused into one
(`packed`, HFTA), the packed optimizers (`optimizers.OPTIMIZERS`) with SAM/ASAM around them
(`sam`), fp16 loss scaling per member (`loss_scale`), learning-rate schedules
(`schedules.SCHEDULES`) and Grad-CAM (`gradcam`). Nothing here imports agent/."""

# The names a run's config may give, importable without torch (a command that only checks a
# config or plans runs, such as agent.repeat or agent.status, need not load its ~650 MB): the
# keys of models.MODELS and optimizers.OPTIMIZERS, in order (tests/test_params.py checks).
MODEL_NAMES = ("dense", "skip_mlp", "cnn", "resnet")
OPTIMIZER_NAMES = ("sgd", "adam", "adamw", "rmsprop", "sam")
