DROP TABLE gpu_samples;
DROP TABLE node_reports;
DROP TABLE node_keys;
