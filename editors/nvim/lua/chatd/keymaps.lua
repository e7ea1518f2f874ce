--- Buffer-local keys of a chat buffer (configured in `setup({ keymaps = ... })`).

local M = {}

local function each(spec, fn)
  if not spec or spec == false then return end
  if type(spec) == 'string' then spec = { spec } end
  for _, lhs in ipairs(spec) do fn(lhs) end
end

function M.attach(chat)
  local k = require('chatd').config.keymaps
  local buf = chat.buf
  local function map(modes, spec, fn, desc)
    each(spec, function(lhs) vim.keymap.set(modes, lhs, fn, { buffer = buf, desc = 'chatd: ' .. desc, nowait = true }) end)
  end
  map({ 'n', 'i' }, k.send, function()
    if vim.fn.mode() == 'i' then vim.cmd.stopinsert() end
    chat:send()
  end, 'send the input')
  map('n', k.send_normal, function() chat:send() end, 'send the input')
  map({ 'n', 'i' }, k.cancel, function() chat:cancel() end, 'cancel the reply')
  map('n', k.close, function() vim.cmd.close({ mods = { emsg_silent = true } }) end, 'close the window')
  map('n', k.next_header, function() vim.fn.search([[^## ]], 'W') end, 'next message')
  map('n', k.prev_header, function() vim.fn.search([[^## ]], 'bW') end, 'previous message')
end

return M
