-- :Chatd <subcommand>: the plugin's one command. Loading is lazy: nothing is required until it runs.
if vim.g.loaded_chatd then return end
vim.g.loaded_chatd = true

if vim.fn.has('nvim-0.10') ~= 1 then
  vim.api.nvim_echo({ { 'chatd.nvim needs Neovim 0.10 or newer', 'ErrorMsg' } }, true, {})
  return
end

vim.api.nvim_create_user_command('Chatd', function(opts) require('chatd').command(opts) end, {
  nargs = '*',
  range = true,
  bang = true,
  desc = 'chatd: open|new|send|add|cancel|model|fork|clear|rename|delete',
  complete = function(arglead, cmdline) return require('chatd').complete(arglead, cmdline) end,
})
