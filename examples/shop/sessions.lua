-- Tier 1, on every member of the sessions replica set after box.cfg: the
-- shoppers' carts, kept apart from the goods. The leader (the writable member)
-- makes the space; replicas get it, and every cart, by replication.
if not box.info.ro then
    local carts = box.schema.space.create('carts', {if_not_exists = true})
    carts:create_index('pk', {if_not_exists = true, parts = {{1, 'string'}}})
    -- The router reads and writes the carts as guest (the demo's lab is closed).
    box.schema.user.grant('guest', 'read,write', 'space', 'carts', {if_not_exists = true})
end
