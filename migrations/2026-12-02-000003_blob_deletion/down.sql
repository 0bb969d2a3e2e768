ALTER TABLE blobs DROP COLUMN deleting;
