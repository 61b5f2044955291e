-- Version 2 -> 3 (tcpchat 0.3): profiles. A name's one-line bio and its picture (a stored file, conv 'profile').
ALTER TABLE known ADD COLUMN bio TEXT;
ALTER TABLE known ADD COLUMN picture INTEGER REFERENCES files (id);
