DROP INDEX nodes_silent;
ALTER TABLE nodes DROP COLUMN silent_through;
