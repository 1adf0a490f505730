"""The networks a trial trains: the models (`models.MODELS`), K of them fused into one
(`packed`, HFTA), the packed optimizers (`optimizers.OPTIMIZERS`) with SAM/ASAM around them
(`sam`), fp16 loss scaling per member (`loss_scale`), learning-rate schedules
(`schedules.SCHEDULES`) and Grad-CAM (`gradcam`). Nothing here imports agent/."""
