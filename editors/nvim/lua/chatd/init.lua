--- chatd.nvim: Neovim chat buffers for the chatd daemon, shared live with every other chatd client.
---
--- The plugin stays thin: it renders what the daemon streams, captures input, and offers editor-side
--- tools. Prompts, providers, model choice and persistence all live in the daemon.
---
--- Usage: `require('chatd').setup({})` then `:Chatd open`. See `:h chatd`.

local M = {}
local H = {}

M.version = '0.1.0'

--- Defaults; `setup(opts)` deep-merges `opts` over a copy. Documented in doc/chatd.txt.
M.default_config = {
  connection = {
    -- 'auto': the daemon's socket if it answers, else spawn `cmd stdio` (which starts the daemon);
    -- 'socket': only the socket; 'stdio': always spawn `cmd stdio`
    transport = 'auto',
    -- the chatd executable (string or list, e.g. { 'python', '-m', 'chatd' })
    cmd = 'chatd',
    -- socket path; nil resolves as chatd does ($CHATD_SOCKET, $CHATD_HOME/run, $XDG_RUNTIME_DIR/chatd)
    socket = nil,
    -- extra environment for a spawned `chatd stdio`
    env = nil,
    -- poll the socket and reconnect after the daemon goes away
    reconnect = true,
    reconnect_max_ms = 2000,
  },
  -- conversation for `:Chatd open`/`send` when none is open yet (a function gets called)
  default_conversation = function() return 'nvim-' .. vim.fn.fnamemodify(vim.fn.getcwd(), ':t') end,
  window = {
    layout = 'vertical', -- 'vertical' | 'horizontal' | 'tab' | 'current'
    width = 0.4, -- columns, or a fraction of the screen when <= 1
    height = 0.4,
  },
  keymaps = {
    send = '<C-s>', -- normal and insert mode
    send_normal = '<CR>', -- normal mode only
    cancel = '<C-c>',
    close = 'q',
    next_header = ']]',
    prev_header = '[[',
  },
  tools = {
    enabled = true, -- register nvim_read_buffer, nvim_list_buffers, nvim_diagnostics with the daemon
    disable = {}, -- names of built-in tools not to register
    extra = {}, -- more tools: { name, description, parameters, side_effects, run = function(args) -> result }
    send = nil, -- tool names offered on each send (nil: the ones registered here; false: none)
    approval = true, -- answer `tool/approve` prompts in this Neovim
    approve = nil, -- function(request, done(bool)); default: vim.ui.select Allow/Deny
  },
}

M.config = vim.deepcopy(M.default_config)
H.did_setup = false

function M.setup(opts)
  M.config = vim.tbl_deep_extend('force', vim.deepcopy(M.default_config), opts or {})
  if H.did_setup then return end
  H.did_setup = true
  H.highlights()
  require('chatd.chat').setup_events()
  require('chatd.tools').setup()
end

--- Commands work without an explicit setup() call.
function H.ensure() if not H.did_setup then M.setup(M.config) end end

function H.highlights()
  local links = {
    ChatdUser = 'Title', ChatdAssistant = 'Function', ChatdNote = 'Comment', ChatdWarn = 'DiagnosticWarn',
    ChatdError = 'DiagnosticError', ChatdTool = 'Special', ChatdStreaming = 'NonText', ChatdHint = 'NonText',
  }
  for group, link in pairs(links) do vim.api.nvim_set_hl(0, group, { link = link, default = true }) end
end

local client = function() return require('chatd.client') end
local chats = function() return require('chatd.chat') end

--- The chat a command acts on: the current buffer's, else the last used, else the default conversation.
function H.current(open_default)
  local c = chats().for_buf(0) or chats().last
  if c and vim.api.nvim_buf_is_valid(c.buf) then return c end
  if open_default ~= false then
    local name = M.config.default_conversation
    if type(name) == 'function' then name = name() end
    return chats().open(name, { show = true })
  end
end

local function ago(t)
  local d = os.time() - math.floor(t or 0)
  if d < 60 then return 'just now' end
  if d < 3600 then return ('%d min ago'):format(d / 60) end
  if d < 86400 then return ('%d h ago'):format(d / 3600) end
  return ('%d days ago'):format(d / 86400)
end

-- ---------------------------------------------------------------- the API behind :Chatd
--- Open a conversation by name, or pick one (names, models, last activity) with vim.ui.select.
function M.open(name, opts)
  H.ensure()
  if name and name ~= '' then return chats().open(name, opts) end
  client().request('conversation/list', { limit = 200 }, function(err, r)
    if err then return vim.notify('chatd: ' .. err.message, vim.log.levels.ERROR) end
    local items = vim.list_extend({ { new = true } }, r.conversations)
    vim.ui.select(items, {
      prompt = 'chatd conversations',
      kind = 'chatd_conversation',
      format_item = function(c)
        if c.new then return '+ new conversation' end
        local model = c.lastModel ~= vim.NIL and c.lastModel or (c.models[1] or 'default model')
        return ('%s  ·  %s  ·  %d messages  ·  %s'):format(c.name, model, c.messageCount, ago(c.updatedAt))
      end,
    }, function(choice)
      if not choice then return end
      if choice.new then return M.new() end
      chats().open(choice.name, opts)
    end)
  end)
end

function M.new(name)
  H.ensure()
  local function create(n)
    if not n or n == '' then return end
    client().request('conversation/create', { name = n }, function(err)
      if err then return vim.notify('chatd: ' .. err.message, vim.log.levels.ERROR) end
      chats().open(n)
    end)
  end
  if name and name ~= '' then return create(name) end
  vim.ui.input({ prompt = 'New conversation: ', default = os.date('chat-%Y%m%d-%H%M%S') }, create)
end

--- Send `text`, or a range of the current buffer (with file name and language), or the chat's input.
function M.send(text, range)
  H.ensure()
  local parts = {}
  if range then table.insert(parts, require('chatd.tools').snippet(0, range[1], range[2])) end
  local chat = H.current()
  if text and text ~= '' then table.insert(parts, 1, text) end
  if #parts == 0 then return chat:send() end
  chat:send(table.concat(parts, '\n\n'))
end

--- Put a range of the current buffer into the chat's input area, to ask about it.
function M.add(range)
  H.ensure()
  local snippet = require('chatd.tools').snippet(0, range[1], range[2])
  local chat = H.current()
  local cur = chat:input_text()
  chat:set_input((cur ~= '' and (cur .. '\n\n') or '') .. snippet .. '\n\n')
  chat:show()
  vim.api.nvim_win_set_cursor(0, { vim.api.nvim_buf_line_count(chat.buf), 0 })
end

function M.cancel() H.ensure(); local c = H.current(false); if c then c:cancel() end end

--- Pick the model the conversation prefers (from models/list), or set it by name.
function M.model(name)
  H.ensure()
  local chat = H.current()
  local function set(model)
    if not model then return end
    client().request('conversation/update', { name = chat.name, preferModel = model }, function(err, r)
      if err then return chat:error(err.message) end
      chat.info = r.conversation
      chat:note('> model: ' .. model, 'ChatdNote')
    end)
  end
  if name and name ~= '' then return set(name) end
  client().request('models/list', vim.empty_dict(), function(err, r)
    if err then return chat:error(err.message) end
    vim.ui.select(r.models, {
      prompt = 'chatd model for ' .. chat.name,
      kind = 'chatd_model',
      format_item = function(m)
        return ('%s  ·  %s%s'):format(m.name, m.provider, m.keyPresent and '' or '  (no key)')
      end,
    }, function(m) if m then set(m.name) end end)
  end)
end

function M.fork(new_name)
  H.ensure()
  local chat = H.current()
  local function go(n)
    if not n or n == '' then return end
    client().request('conversation/fork', { name = chat.name, newName = n }, function(err)
      if err then return chat:error(err.message) end
      chats().open(n)
    end)
  end
  if new_name and new_name ~= '' then return go(new_name) end
  vim.ui.input({ prompt = 'Fork ' .. chat.name .. ' as: ', default = chat.name .. '-fork' }, go)
end

function M.clear()
  H.ensure()
  local chat = H.current()
  client().request('conversation/clear', { name = chat.name }, function(err)
    if err then return chat:error(err.message) end
  end)
end

function M.rename(new_name)
  H.ensure()
  local chat = H.current()
  local function go(n)
    if not n or n == '' or n == chat.name then return end
    client().request('conversation/update', { name = chat.name, newName = n }, function(err)
      if err then return chat:error(err.message) end
      -- conversation/changed (renamed) re-keys the buffer; do it now too in case it raced
      if chats().chats[chat.name] == chat then chats().renamed(chat, n) end
    end)
  end
  if new_name and new_name ~= '' then return go(new_name) end
  vim.ui.input({ prompt = 'Rename ' .. chat.name .. ' to: ', default = chat.name }, go)
end

function M.delete(name, force)
  H.ensure()
  local chat = (name and name ~= '') and chats().chats[name] or (not name or name == '') and H.current(false) or nil
  name = (name and name ~= '') and name or (chat and chat.name)
  if not name then return vim.notify('chatd: which conversation?', vim.log.levels.WARN) end
  local function go()
    client().request('conversation/delete', { name = name }, function(err)
      if err then return vim.notify('chatd: ' .. err.message, vim.log.levels.ERROR) end
      local c = chats().chats[name]
      if c and vim.api.nvim_buf_is_valid(c.buf) then pcall(vim.api.nvim_buf_delete, c.buf, { force = true }) end
    end)
  end
  if force then return go() end
  vim.ui.select({ 'Delete', 'Keep' }, { prompt = 'Delete conversation ' .. name .. ' and its history?' },
    function(choice) if choice == 'Delete' then go() end end)
end

--- For 'statusline': "chatd: name · model · 1.2k tok · $0.0031" in a chat buffer, '' elsewhere.
function M.statusline()
  local ok, chat = pcall(function() return chats().for_buf(0) end)
  if not ok or not chat then return '' end
  local st = require('chatd.client').state
  local model = chat.session.model or (chat.info and chat.info.lastModel ~= vim.NIL and chat.info.lastModel)
    or (chat.info and chat.info.preferModel) or '?'
  local tokens = chat.session.input + chat.session.output
  local tok = tokens >= 1000 and ('%.1fk'):format(tokens / 1000) or tostring(tokens)
  local out = ('chatd: %s · %s · %s tok · $%.4f'):format(chat.name, model, tok, chat.session.cost)
  if chat.live then out = out .. ' · streaming' end
  if st == 'lost' then out = out .. ' · daemon lost' end
  return out
end

-- ---------------------------------------------------------------- :Chatd
-- names may contain spaces: a subcommand's words are joined
H.subcommands = {
  open = function(a) M.open(a.text) end,
  new = function(a) M.new(a.text) end,
  send = function(a) M.send(a.text, a.range) end,
  add = function(a) M.add(a.range or { vim.fn.line('.'), vim.fn.line('.') }) end,
  cancel = function() M.cancel() end,
  model = function(a) M.model(a.text) end,
  fork = function(a) M.fork(a.text) end,
  clear = function() M.clear() end,
  rename = function(a) M.rename(a.text) end,
  delete = function(a) M.delete(a.text, a.bang) end,
}

function M.command(opts)
  H.ensure()
  local args = opts.fargs
  local sub = table.remove(args, 1) or 'open'
  local bang = opts.bang
  if sub:sub(-1) == '!' then sub, bang = sub:sub(1, -2), true end -- `:Chatd delete! name` works too
  local fn = H.subcommands[sub]
  if not fn then return vim.notify('chatd: unknown subcommand ' .. sub, vim.log.levels.ERROR) end
  fn({ args = args, text = table.concat(args, ' '), bang = bang,
    range = opts.range > 0 and { opts.line1, opts.line2 } or nil })
end

H.name_args = { open = true, delete = true }

function M.complete(arglead, cmdline)
  local words = vim.split(cmdline:gsub('^%S+%s*', ''), '%s+')
  local function filter(list)
    return vim.tbl_filter(function(s) return vim.startswith(s, arglead) end, list)
  end
  if #words <= 1 then
    local names = vim.tbl_keys(H.subcommands)
    table.sort(names)
    return filter(names)
  end
  if #words > 2 then return {} end
  H.ensure()
  if H.name_args[words[1]] then
    local r = require('chatd.client').request_sync('conversation/list', { limit = 200 }, 500)
    return filter(vim.tbl_map(function(c) return c.name end, r and r.conversations or {}))
  elseif words[1] == 'model' then
    local r = require('chatd.client').request_sync('models/list', vim.empty_dict(), 500)
    return filter(vim.tbl_map(function(m) return m.name end, r and r.models or {}))
  end
  return {}
end

return M
