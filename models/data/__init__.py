"""Data for the learned defect model: MVTec AD reading, synthetic sets, geometry, anomalies."""
