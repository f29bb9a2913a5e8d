"""The IaaS layer: connectors, instances, images, contextualization."""
