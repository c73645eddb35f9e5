-- MediaGoblin's tables that bouncemilter reads or writes, as SQLAlchemy
-- creates them on PostgreSQL for MediaGoblin 0.9 to 0.15
-- (mediagoblin/db/models.py after the federation migrations). Types,
-- constraints and names are MediaGoblin's; tables bouncemilter never touches
-- are left out, except core__locations, the target of core__users.location.
CREATE TABLE core__locations (
	id SERIAL NOT NULL,
	name VARCHAR,
	position TEXT,
	address TEXT,
	PRIMARY KEY (id)
);

CREATE TABLE core__users (
	id SERIAL NOT NULL,
	url VARCHAR,
	bio TEXT,
	name VARCHAR,
	type VARCHAR,
	created TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	updated TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	location INTEGER,
	PRIMARY KEY (id),
	FOREIGN KEY(location) REFERENCES core__locations (id)
);

CREATE TABLE core__local_users (
	id INTEGER NOT NULL,
	username VARCHAR NOT NULL,
	email VARCHAR NOT NULL,
	pw_hash VARCHAR,
	wants_comment_notification BOOLEAN,
	wants_notifications BOOLEAN,
	license_preference VARCHAR,
	uploaded INTEGER,
	upload_limit INTEGER,
	PRIMARY KEY (id),
	FOREIGN KEY(id) REFERENCES core__users (id),
	UNIQUE (username)
);

CREATE TABLE core__privileges (
	id SERIAL NOT NULL,
	privilege_name VARCHAR NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (privilege_name)
);

CREATE TABLE core__privileges_users (
	"user" INTEGER NOT NULL,
	privilege INTEGER NOT NULL,
	PRIMARY KEY ("user", privilege),
	FOREIGN KEY("user") REFERENCES core__users (id),
	FOREIGN KEY(privilege) REFERENCES core__privileges (id)
);

CREATE TABLE core__user_bans (
	user_id INTEGER NOT NULL,
	expiration_date DATE,
	reason TEXT NOT NULL,
	PRIMARY KEY (user_id),
	FOREIGN KEY(user_id) REFERENCES core__users (id)
);

-- MediaGoblin's foundations (mediagoblin/db/models.py, FOUNDATIONS).
INSERT INTO core__privileges (privilege_name) VALUES
	('admin'), ('moderator'), ('uploader'), ('reporter'), ('commenter'), ('active');
