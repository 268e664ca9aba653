"""The training worker (heavy: torch, transformers, MLflow). Only the worker process imports it.

    worker      entry point: python -m tunedeck.training.worker RUN_DIR
    recipe      the training run, top to bottom: setup, data, model, train, checkpoint, export
    models      model folder (GGUF converted once), tokenizer, weights, device and precision
    data        read + tokenize a split; packed rows per epoch
    tokenize    rows -> input ids + labels with each task type's loss mask
    packing     rows of examples -> padded batches with a block-diagonal causal mask
    loss        summed token loss of a micro-batch (normalised per optimizer step by the recipe)
    plan        duration -> steps, batch sizes, LR schedule, checkpoint steps
    progress    throughput, ETA and report throttling
    evaluate    eval loss and eval_prompts generations at checkpoints
    checkpoint  ep{E}-ba{B} folders, latest-sharded-rank0.symlink, final model folder
    tracking    MLflow: experiment, run, params, metrics, generations, model, registry
    report      JSON-line reports to the service
    failures    TrainingFailure / StopRequested and SIGTERM handling
    datacheck   the form's data check (tokenizer only), in a helper process the service starts
    tiny        tiny random models built from scratch for tests and demos
"""
