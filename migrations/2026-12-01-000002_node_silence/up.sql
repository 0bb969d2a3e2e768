-- A node the engine found silent (`NodeSilent`) is down from its last heartbeat until it
-- reports again, whether or not it ever does. While it is silent, `silent_through` is the
-- time up to which its downtime is counted: the reputation projection moves it (and the
-- node's and its provider's down time) to the time of each later record it sees, and the
-- heartbeat that brings the node back counts only the rest of the gap. NULL while the node
-- reports.
ALTER TABLE nodes ADD COLUMN silent_through timestamptz;
CREATE INDEX nodes_silent ON nodes (provider) WHERE silent_through IS NOT NULL;
