// Slash commands in the browser: the same words as the desktop and terminal clients (tcpchat/ui/commands.py).
// Each returns a frame to send (or null) and, optionally, a line to show; no DOM, no socket.

const minutes = (words) => (/^\d+$/.test(words[0] || "") ? [Number(words.shift()) * 60, words] : [undefined, words]);

export const HELP = [
  ["/join ROOM", "join (or create) a room"], ["/leave [ROOM]", "leave a room"], ["/msg NAME TEXT", "a direct message"],
  ["/who", "who is online"], ["/away [STATUS]", "show yourself away"], ["/back", "show yourself here"],
  ["/status [TEXT]", "set your status line"], ["/search WORDS", "search what you may read"],
  ["/oper KEY", "become an operator"], ["/kick NAME [REASON]", "operator: disconnect someone"],
  ["/ban NAME [MINUTES] [REASON]", "operator: ban a name"], ["/mute NAME [MINUTES]", "operator: stop someone writing"],
  ["/unmute NAME", "operator"], ["/unban NAME", "operator"], ["/announce TEXT", "operator: a notice to everyone"],
  ["/passkey [NEW]", "operator: change the join passkey"], ["/help", "this list"],
];

/** Parse ``entry`` typed in conversation ``current``: { frame?, switchTo?, show?, error? }. */
export function parse(entry, current) {
  const [word, ...rest] = entry.trim().split(/\s+/);
  const text = entry.trim().slice(word.length).trim();
  const room = current.startsWith("#") ? current.slice(1) : "general";
  switch (word.toLowerCase()) {
    case "/join": return text ? { frame: { type: "join", room: text.replace(/^#/, "") }, switchTo: "#" + text.replace(/^#/, "") }
                              : { error: "Usage: /join ROOM" };
    case "/leave": return { frame: { type: "leave", room: (text || room).replace(/^#/, "") }, switchTo: "#general" };
    case "/msg": {
      if (rest.length < 2) return { error: "Usage: /msg NAME TEXT" };
      return { say: { text: text.slice(rest[0].length).trim(), conv: "@" + rest[0] }, switchTo: "@" + rest[0] };
    }
    case "/who": return { frame: { type: "who" } };
    case "/away": return { frame: { type: "presence", away: true, ...(text ? { status: text } : {}) } };
    case "/back": return { frame: { type: "presence", away: false } };
    case "/status": return { frame: { type: "presence", status: text } };
    case "/search": return text ? { frame: { type: "search", q: text, limit: 20 } } : { error: "Usage: /search WORDS" };
    case "/oper": return text ? { frame: { type: "oper", passkey: text }, secret: true } : { error: "Usage: /oper KEY" };
    case "/kick": return rest.length ? { frame: { type: "mod", action: "kick", name: rest[0], ...(rest[1] ? { reason: rest.slice(1).join(" ") } : {}) } }
                                     : { error: "Usage: /kick NAME [REASON]" };
    case "/ban": {
      if (!rest.length) return { error: "Usage: /ban NAME [MINUTES] [REASON]" };
      const [duration, words] = minutes(rest.slice(1));
      return { frame: { type: "mod", action: "ban", name: rest[0], ...(duration ? { duration } : {}), ...(words.length ? { reason: words.join(" ") } : {}) } };
    }
    case "/mute": {
      if (!rest.length) return { error: "Usage: /mute NAME [MINUTES]" };
      const [duration] = minutes(rest.slice(1));
      return { frame: { type: "mod", action: "mute", name: rest[0], ...(duration ? { duration } : {}) } };
    }
    case "/unmute": return rest.length ? { frame: { type: "mod", action: "unmute", name: rest[0] } } : { error: "Usage: /unmute NAME" };
    case "/unban": return rest.length ? { frame: { type: "mod", action: "unban", name: rest[0] } } : { error: "Usage: /unban NAME" };
    case "/announce": return text ? { frame: { type: "mod", action: "announce", text } } : { error: "Usage: /announce TEXT" };
    case "/passkey": return { frame: { type: "mod", action: "rotate", ...(text ? { passkey: text } : {}) }, secret: true };
    case "/help": return { show: HELP.map(([c, h]) => `${c} — ${h}`).join("\n") };
    default: return { error: `Unknown command ${word}; /help lists them.` };
  }
}
