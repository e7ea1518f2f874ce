--- A chat buffer: one per conversation, markdown, kept in step with the daemon.
---
--- Layout: the transcript (history, the turn streaming now, our sends still waiting), then the input
--- header `## You` (tracked by an extmark) and the input area below it. The transcript is rewritten
--- from state: history when a turn commits, only the tail while a reply streams. All the writes of one
--- reply are joined into one undo step.

local client = require('chatd.client')
local render = require('chatd.render')

local M = {}
local H = {}

--- name -> Chat
M.chats = {}
--- the chat used last, for commands run outside a chat buffer
M.last = nil

local ns_struct = vim.api.nvim_create_namespace('chatd_struct')
local ns_hl = vim.api.nvim_create_namespace('chatd_hl')

---@class chatd.Chat
---@field name string
---@field buf integer
---@field info table|nil ConversationInfo
---@field messages table[]
---@field notes table[]
---@field live table|nil
---@field pending string[]
---@field loaded boolean
local Chat = {}
Chat.__index = Chat

local function cfg() return require('chatd').config end

--- The chat shown in `buf` (default: current buffer), or nil.
function M.for_buf(buf)
  buf = (buf == nil or buf == 0) and vim.api.nvim_get_current_buf() or buf
  for _, chat in pairs(M.chats) do
    if chat.buf == buf then return chat end
  end
end

--- Get or create the chat for `name`, load it from the daemon (subscribing), and show it.
function M.open(name, opts)
  opts = opts or {}
  local chat = M.chats[name]
  if not chat or not vim.api.nvim_buf_is_valid(chat.buf) then
    chat = Chat.new(name)
    M.chats[name] = chat
    chat:load(opts.create)
  end
  M.last = chat
  if opts.show ~= false then chat:show(opts.window) end
  return chat
end

function Chat.new(name)
  local self = setmetatable({ name = name, messages = {}, notes = {}, pending = {}, loaded = false,
    last_seq = 0, failures = {}, session = { cost = 0, input = 0, output = 0 } }, Chat)
  self.buf = vim.api.nvim_create_buf(true, false)
  local bo = vim.bo[self.buf]
  bo.buftype, bo.bufhidden, bo.swapfile = 'nofile', 'hide', false
  pcall(vim.api.nvim_buf_set_name, self.buf, 'chatd://' .. name)
  bo.filetype = 'markdown'
  vim.b[self.buf].chatd_conversation = name
  local ul = bo.undolevels
  bo.undolevels = -1
  vim.api.nvim_buf_set_lines(self.buf, 0, -1, false, { render.USER_HEADER, '' })
  bo.undolevels = ul
  self.input_mark = vim.api.nvim_buf_set_extmark(self.buf, ns_struct, 0, 0, {
    virt_text = { { '  ' .. H.hint(), 'ChatdHint' } }, virt_text_pos = 'eol' })
  self.hist_len = 0
  self.hist_blank = true
  self.tail_len = 0
  require('chatd.keymaps').attach(self)
  vim.api.nvim_create_autocmd('BufWipeout', { buffer = self.buf, once = true, callback = function()
    if M.chats[self.name] == self then
      M.chats[self.name] = nil
      if client.state == 'ready' then client.request('conversation/unsubscribe', { name = self.name }) end
    end
    if M.last == self then M.last = nil end
  end })
  return self
end

function H.hint()
  local k = cfg().keymaps
  local send = type(k.send) == 'table' and k.send[1] or k.send
  local cancel = type(k.cancel) == 'table' and k.cancel[1] or k.cancel
  return ('%s send · %s cancel'):format(send or '', cancel or '')
end

--- Subscribe and render what the daemon holds (history and a turn already streaming).
function Chat:load(create)
  self.loaded = false
  local function subscribed(err, result)
    if err then
      if err.code == -32001 and create ~= false then
        return client.request('conversation/create', { name = self.name }, function(e2)
          if e2 and e2.code ~= -32002 then return self:error('cannot create: ' .. e2.message) end
          client.request('conversation/subscribe', { name = self.name }, subscribed)
        end)
      end
      return self:error(err.message or tostring(err))
    end
    self.info = result.conversation
    self.messages = result.messages or {}
    self.last_seq = #self.messages > 0 and self.messages[#self.messages].seq or 0
    self.live = nil
    if result.activeTurn and result.activeTurn ~= vim.NIL then
      local t = result.activeTurn
      self.live = { turnId = t.turnId, user = t.user, model = t.model, items = {}, failures = {} }
      if t.text and t.text ~= '' then table.insert(self.live.items, { kind = 'text', text = t.text }) end
    end
    self.loaded = true
    self.deleted = false
    self:render_all(false, true)
  end
  client.request('conversation/subscribe', { name = self.name }, subscribed)
end

-- ---------------------------------------------------------------- buffer writes
function Chat:valid() return vim.api.nvim_buf_is_valid(self.buf) end

function Chat:input_row()
  local pos = vim.api.nvim_buf_get_extmark_by_id(self.buf, ns_struct, self.input_mark, {})
  return pos[1]
end

--- The text typed below the input header.
function Chat:input_text()
  local lines = vim.api.nvim_buf_get_lines(self.buf, self:input_row() + 1, -1, false)
  return vim.trim(table.concat(lines, '\n'))
end

function Chat:set_input(text)
  local row = self:input_row()
  vim.api.nvim_buf_set_lines(self.buf, row + 1, -1, false, vim.split(text or '', '\n', { plain = true }))
end

--- Run `fn` with the buffer's edits joined to the previous undo step when `join`.
function Chat:edit(join, fn)
  vim.api.nvim_buf_call(self.buf, function()
    if join then pcall(vim.cmd.undojoin) end
    fn()
  end)
end

--- Which windows showing this buffer follow the end of the transcript (the user has not scrolled away).
function Chat:followers()
  local out = {}
  for _, win in ipairs(vim.fn.win_findbuf(self.buf)) do
    local bottom = vim.fn.line('w$', win)
    local input = self:input_row() + 1
    if bottom >= input - 1 then table.insert(out, win) end
  end
  return out
end

function Chat:follow(wins)
  for _, win in ipairs(wins) do
    if vim.api.nvim_win_is_valid(win) then
      local cur = vim.api.nvim_win_get_cursor(win)[1]
      local input = self:input_row() + 1
      if cur < input then
        -- reading the end of the transcript: keep the newest line in view
        vim.api.nvim_win_set_cursor(win, { math.max(input - 1, 1), 0 })
      end
      vim.api.nvim_win_call(win, function()
        if vim.fn.line('w$') < vim.api.nvim_buf_line_count(self.buf) then vim.cmd('normal! zb') end
      end)
    end
  end
end

local function apply_hl(buf, first, hl)
  for i, group in pairs(hl) do
    if group then pcall(vim.api.nvim_buf_set_extmark, buf, ns_hl, first + i - 1, 0, { line_hl_group = group }) end
  end
end

--- Rewrite the whole transcript (history changed). `join`: part of the reply being streamed;
--- `forget`: not undoable at all (loading what the daemon holds).
function Chat:render_all(join, forget)
  if not self:valid() then return end
  local follow = self:followers()
  local hist = render.history(self)
  self.hist_len = #hist.lines
  self.hist_blank = self.hist_len == 0 or hist.lines[#hist.lines] == ''
  local tail = render.tail(self, self.hist_blank)
  local lines = vim.list_extend(vim.list_extend({}, hist.lines), tail.lines)
  local row = self:input_row()
  local ul = vim.bo[self.buf].undolevels
  if forget then vim.bo[self.buf].undolevels = -1 end
  self:edit(join, function()
    vim.api.nvim_buf_clear_namespace(self.buf, ns_hl, 0, row)
    vim.api.nvim_buf_set_lines(self.buf, 0, row, false, lines)
  end)
  if forget then vim.bo[self.buf].undolevels = ul end
  self.tail_len = #tail.lines
  apply_hl(self.buf, 0, hist.hl)
  apply_hl(self.buf, self.hist_len, tail.hl)
  self:follow(follow)
  H.redraw_status()
end

--- Rewrite only what follows the history (a delta arrived): O(reply), not O(history).
function Chat:render_tail(join)
  if not self:valid() then return end
  local follow = self:followers()
  local tail = render.tail(self, self.hist_blank)
  local row = self:input_row()
  local first = math.max(row - self.tail_len, 0)
  self:edit(join, function()
    vim.api.nvim_buf_clear_namespace(self.buf, ns_hl, first, row)
    vim.api.nvim_buf_set_lines(self.buf, first, row, false, tail.lines)
  end)
  self.tail_len = #tail.lines
  apply_hl(self.buf, first, tail.hl)
  self:follow(follow)
end

--- A note in the transcript (not part of the conversation): errors, fallbacks, cancels, lost daemon.
function Chat:note(text, hl)
  table.insert(self.notes, { after_seq = self.last_seq, lines = vim.split(text, '\n', { plain = true }), hl = hl })
  self:render_all(self.live ~= nil)
end

function Chat:error(text) self:note('> error: ' .. text, 'ChatdError') end

-- ---------------------------------------------------------------- sending
--- Send `text` (default: the input area) as the next turn.
function Chat:send(text)
  local from_input = text == nil
  text = text or self:input_text()
  if text == '' then return vim.notify('chatd: nothing to send', vim.log.levels.WARN) end
  if from_input then self:set_input('') end
  table.insert(self.pending, text)
  self:render_tail(false)
  local params = { conversation = self.name, text = text }
  local tools = require('chatd.tools').send_tools()
  if tools then params.tools = tools end
  local deleted = self.deleted
  client.request('chat/send', params, function(err, result)
    self:drop_pending(text)
    if deleted then self:load(true) end -- the daemon dropped our subscription with the conversation
    if err then
      if err.code ~= -32004 then -- a failed turn is shown from chat/turnEnded, for every client alike
        self:error(err.message or tostring(err))
        if self:input_text() == '' then self:set_input(text) end
      end
      return
    end
    local u = result.usage or {}
    self.session.input = self.session.input + (u.inputTokens or 0)
    self.session.output = self.session.output + (u.outputTokens or 0)
    self.session.cost = self.session.cost + (result.cost or 0)
    self.session.model = result.modelUsed
    H.redraw_status()
  end)
end

function Chat:drop_pending(text)
  for i, t in ipairs(self.pending) do
    if t == text then
      table.remove(self.pending, i)
      return true
    end
  end
end

function Chat:cancel()
  client.request('chat/cancel', { conversation = self.name }, function(err, result)
    if err then return self:error(err.message) end
    if not result.cancelled then vim.notify('chatd: no reply is streaming in ' .. self.name) end
  end)
end

-- ---------------------------------------------------------------- daemon events
function Chat:on_turn_started(p)
  local ours = self:drop_pending(p.user and p.user.text or '')
  self.live = { turnId = p.turnId, user = p.user, model = p.model, items = {}, failures = {}, ours = ours,
    user_text = p.user and p.user.text }
  self:render_tail(false)
end

function Chat:live_for(turn_id)
  if self.live and self.live.turnId == turn_id then return self.live end
end

function Chat:on_delta(p)
  local live = self:live_for(p.turnId)
  if not live then return end
  local last = live.items[#live.items]
  if last and last.kind == 'text' then
    last.text = last.text .. p.text
  else
    table.insert(live.items, { kind = 'text', text = p.text })
  end
  self:render_tail(true)
end

function Chat:on_attempt(p)
  local live = self:live_for(p.turnId)
  if not live then return end
  -- text streamed by the failed try is void
  live.items = vim.tbl_filter(function(i) return i.kind ~= 'text' end, live.items)
  table.insert(live.failures, { model = p.model, reason = p.reason })
  local what = p.next == 'retry' and ('retrying in %.1fs'):format(p.delayS or 0)
    or p.next == 'fallback' and 'trying the next model' or 'giving up'
  table.insert(live.items, { kind = 'line', hl = 'ChatdWarn',
    text = ('> %s failed: %s; %s'):format(p.model, render.short(p.reason or 'error', 160), what) })
  self:render_tail(true)
end

function Chat:on_tool_call(p)
  local live = self:live_for(p.turnId)
  if not live then return end
  table.insert(live.items, { kind = 'line', hl = 'ChatdTool', text = render.tool_call_line(p.tool, p.arguments) })
  self:render_tail(true)
end

function Chat:on_tool_result(p)
  require('chatd.tools').settled(p.callId)
  local live = self:live_for(p.turnId)
  if not live then return end
  table.insert(live.items, { kind = 'line', hl = p.isError and 'ChatdError' or 'ChatdTool',
    text = render.tool_result_line(p.tool, p.output, p.isError, p.decision) })
  self:render_tail(true)
end

function Chat:on_changed(p)
  if p.kind == 'turn' then
    local live = self.live
    local join = live ~= nil and live.turnId ~= nil
    for _, m in ipairs(p.messages or {}) do
      if m.seq > self.last_seq then
        table.insert(self.messages, m)
        self.last_seq = m.seq
      end
    end
    if live and p.messages and p.messages[1] and p.messages[1].turnId == live.turnId then
      self.live = nil
      local failed = vim.tbl_filter(function(f) return f.model end, live.failures)
      if #failed > 0 then
        local model = p.messages[#p.messages].model
        table.insert(self.notes, { after_seq = self.last_seq, lines = { render.fallback_note(model, failed) }, hl = 'ChatdWarn' })
      end
    end
    self:render_all(join)
  elseif p.kind == 'cleared' then
    self.messages, self.notes, self.live = {}, {}, nil
    self:render_all(false)
  elseif p.kind == 'renamed' then
    M.renamed(self, p.name)
  elseif p.kind == 'deleted' then
    self.live = nil
    self.messages, self.last_seq, self.deleted = {}, 0, true
    self:note('> this conversation was deleted; sending here creates it again', 'ChatdWarn')
  elseif p.kind == 'updated' or p.kind == 'created' then
    client.request('conversation/get', { name = self.name, afterSeq = self.last_seq }, function(err, r)
      if not err then self.info = r.conversation; H.redraw_status() end
    end)
  end
end

function Chat:on_turn_ended(p)
  local live = self:live_for(p.turnId)
  if p.outcome == 'committed' then return end
  if live then self.live = nil end
  local user = live and live.user_text
  if p.outcome == 'cancelled' then
    table.insert(self.notes, { after_seq = self.last_seq, hl = 'ChatdWarn',
      lines = { '> reply cancelled: nothing of this turn was saved' } })
  else
    table.insert(self.notes, { after_seq = self.last_seq, hl = 'ChatdError',
      lines = { '> turn failed: ' .. render.short(p.error or 'every model failed', 400) } })
  end
  -- our own words are not lost: they go back to the input area
  if live and live.ours and user and self:input_text() == '' then self:set_input(user) end
  self:render_all(live ~= nil)
end

--- The daemon went away: whatever was streaming is void; the buffer keeps what was committed.
function Chat:on_lost(reason)
  local live = self.live
  self.live = nil
  local restore = live and live.ours and live.user_text
  for _, text in ipairs(self.pending) do restore = restore or text end
  self.pending = {}
  table.insert(self.notes, { after_seq = self.last_seq, hl = 'ChatdError',
    lines = { '> lost the daemon (' .. reason .. ')' .. (live and '; the reply in progress was not saved' or '')
      .. '; reconnecting…' } })
  if restore and self:input_text() == '' then self:set_input(restore) end
  self:render_all(false)
end

--- Reconnected: fetch the truth again (turns may have happened meanwhile).
function Chat:on_reconnected()
  table.insert(self.notes, { after_seq = self.last_seq, hl = 'ChatdNote', lines = { '> reconnected to the daemon' } })
  self:load(false)
end

function M.renamed(chat, new_name)
  M.chats[chat.name] = nil
  chat.name = new_name
  M.chats[new_name] = chat
  vim.b[chat.buf].chatd_conversation = new_name
  pcall(vim.api.nvim_buf_set_name, chat.buf, 'chatd://' .. new_name)
  H.redraw_status()
end

-- ---------------------------------------------------------------- windows
--- Show the buffer: in a window already showing it, else as `window` ('vertical', 'horizontal', 'tab', 'current').
function Chat:show(layout)
  local wins = vim.fn.win_findbuf(self.buf)
  if #wins > 0 then return vim.api.nvim_set_current_win(wins[1]) end
  local w = cfg().window
  layout = layout or w.layout
  if layout == 'vertical' then
    vim.cmd(('botright vertical %dsplit'):format(H.size(w.width, vim.o.columns)))
  elseif layout == 'horizontal' then
    vim.cmd(('botright %dsplit'):format(H.size(w.height, vim.o.lines)))
  elseif layout == 'tab' then
    vim.cmd('tabnew')
  end
  local scratch = vim.api.nvim_get_current_buf()
  vim.api.nvim_win_set_buf(0, self.buf)
  if layout == 'tab' and scratch ~= self.buf then pcall(vim.api.nvim_buf_delete, scratch, {}) end
  vim.wo[0][0].wrap, vim.wo[0][0].linebreak = true, true
  vim.api.nvim_win_set_cursor(0, { vim.api.nvim_buf_line_count(self.buf), 0 })
end

function H.size(value, total)
  if value <= 1 then return math.max(math.floor(total * value), 20) end
  return value
end

function H.redraw_status() pcall(vim.cmd.redrawstatus) end

-- ---------------------------------------------------------------- routing daemon events to chats
local function route(key, method)
  client.on(method, function(p)
    local chat = M.chats[p[key]]
    if chat and chat.loaded and chat:valid() then chat[({
      ['chat/turnStarted'] = 'on_turn_started', ['chat/delta'] = 'on_delta', ['chat/attempt'] = 'on_attempt',
      ['chat/toolCall'] = 'on_tool_call', ['chat/toolResult'] = 'on_tool_result',
      ['chat/turnEnded'] = 'on_turn_ended', ['conversation/changed'] = 'on_changed',
    })[method]](chat, p) end
  end)
end

function M.setup_events()
  for _, m in ipairs({ 'chat/turnStarted', 'chat/delta', 'chat/attempt', 'chat/toolCall', 'chat/toolResult', 'chat/turnEnded' }) do
    route('conversation', m)
  end
  client.on('conversation/changed', function(p)
    local chat = M.chats[p.kind == 'renamed' and p.oldName or p.name]
    if chat and chat:valid() then chat:on_changed(p) end
  end)
  local was_ready = false
  client.on_ready(function()
    if was_ready then
      for _, chat in pairs(M.chats) do if chat:valid() then chat:on_reconnected() end end
    end
    was_ready = true
  end)
  client.on_lost(function(reason)
    for _, chat in pairs(M.chats) do if chat:valid() then chat:on_lost(reason) end end
  end)
end

M.Chat = Chat
return M
