//! UDP ASSOCIATE support (in progress).
