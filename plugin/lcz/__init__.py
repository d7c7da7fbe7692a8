"""Local Climate Zones (LCZ): import of the pretrained So2Sat LCZ42 Sentinel-2 ResNet20.

The So2Sat network (MIT, (c) 2021 ERC starting grant So2Sat project team) classifies a 32 x 32
Sentinel-2 patch at 10 m into the 17 LCZ classes.  Its weights are a Keras 2.1.5 ``.h5`` file
that we never ship: the user downloads it and :func:`plugin.lcz.importer.import_so2sat_weights`
turns it into an ONNX model with an Urban Functions model card in the user's models folder.

Modules (all pure Python + numpy unless stated):

``classes``       the 17 LCZ classes, WUDAPT colours, LCZ -> urban-function mapping
``so2sat_h5``     the network's layer table; reads and checks the ``.h5`` (needs ``h5py``)
``so2sat_numpy``  a float64 NumPy forward pass straight from the h5 tensors (importer self-check)
``so2sat_onnx``   builds the ONNX graph node by node with the ``onnx`` helper (no torch)
``card``          the model card (task ``patch_classification``)
``preprocess``    DN -> network input exactly as the original code, and its patch grid
``importer``      check, build, verify in onnxruntime, install atomically with the licence
``reference_torch``  tests only: an independent plain-torch implementation (imports torch)
"""
