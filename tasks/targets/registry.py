"""The registry of compile targets: name -> the module that defines its ``TARGET``. It imports nothing, so that the
records can name the registered targets as their default without importing any target."""

# name -> module that defines TARGET (the registry: one line per target, in the order a run compiles them by
# default); modules are imported only when used, so
# listing targets never imports a heavy runtime.
TARGET_MODULES = {
    "onnxruntime": "tasks.targets.onnxruntime_cpu",
    "openvino": "tasks.targets.openvino_cpu",
    "inductor": "tasks.targets.inductor_cpu",
    "neuron-inf1": "tasks.targets.neuron.inf1",
    "neuron-inf2": "tasks.targets.neuron.inf2",
    "tensorrt": "tasks.targets.tensorrt_gpu",
}
