-- esp-rfid controllers report access events by host name only: the name each one
-- gave in its last heartbeat or boot message, to attribute them.
ALTER TABLE controller_status ADD COLUMN device_name TEXT;
