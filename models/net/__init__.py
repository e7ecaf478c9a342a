"""The learned defect network (pure ``nn.Module``s): ``model.DefectNet`` built from a
``config.NetConfig``.

Import from the modules themselves: this package imports nothing, so reading a
``NetConfig`` (as ``models.package`` does) does not load torch.
"""
