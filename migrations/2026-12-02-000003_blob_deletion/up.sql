-- A blob whose last hold went is marked `deleting` until its bytes are gone from the store,
-- then its row goes. Meanwhile an upload of the same bytes is told to retry, so removing
-- the bytes never takes them from under a hold that was just added.
ALTER TABLE blobs ADD COLUMN deleting boolean NOT NULL DEFAULT false;
