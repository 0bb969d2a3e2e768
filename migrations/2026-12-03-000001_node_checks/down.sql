DROP TABLE node_checks;
