"""The urban-function fusion network (training side, plain torch).

Modules, one concern each:

* :mod:`.modules`  -- building blocks: residual blocks, spatial attention, the flow warp and the
  cross-modal offset aligner (CSAGFNet), the modality-specific / -invariant extractor, ASPP;
* :mod:`.temporal` -- per-cell temporal-signature encoders (1-d SPP-Net, BiLSTM);
* :mod:`.net`      -- :class:`~.net.UrbanFusionNet` and the export wrapper;
* :mod:`.losses`   -- segmentation, cross-modal and multi-task losses, modality dropout;
* :mod:`.export`   -- ``python -m plugin.learning.fusion.export CHECKPOINT.pt OUT.onnx``.
"""
