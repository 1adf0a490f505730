"""What every layer may use, importing nothing else of this project: image sets from their
files and the uint8 cache (`datasets`, `dataset_files`; `cifar_files` and `idx_files` write
such files for tests), batches cut on the device (`device_cache`), the device and precision
(`device`), `UserError` and the commands' parser (`errors`), torch.save whose storage faults
are OSErrors (`torch_files`), the room a disk and its quota leave (`disk_room`), and W&B's
offline files (`wandb_offline`)."""
