-- Tier 1, on every member of the replica set after box.cfg: the leader (the
-- writable member) makes the schema and the rows; replicas get them by replication.
if not box.info.ro then
    local goods = box.schema.space.create('goods', {if_not_exists = true})
    goods:create_index('pk', {if_not_exists = true, parts = {{1, 'string'}}})
    -- The router reads and writes the goods as guest (the demo's lab is closed).
    box.schema.user.grant('guest', 'read,write', 'space', 'goods', {if_not_exists = true})
    goods:replace{'apple', 3}
    goods:replace{'pear', 5}
end
