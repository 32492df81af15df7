"""Around the trainer's loop: checkpoints, callbacks, TensorBoard, timing, the learning-rate
schedule, elastic training and export of a trained run."""
