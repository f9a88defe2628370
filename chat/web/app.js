/*
 * app.js — Sockeye Chat pages: the room list (index.html) and a room (room.html).
 *
 * Everything people typed (room names, nicknames, messages) is put on the page with
 * textContent, never as HTML.
 */
(function () {
  'use strict';

  const $ = (selector) => document.querySelector(selector);

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  async function fetchJSON(path, options) {
    const res = await fetch(path, Object.assign({ headers: { accept: 'application/json' } }, options));
    let body = null;
    try {
      body = await res.json();
    } catch (e) {
      // not JSON
    }
    return { status: res.status, ok: res.ok, body };
  }

  function errorText(result) {
    return (result.body && result.body.error) || 'HTTP ' + result.status;
  }

  function plural(n, one, many) {
    return n + ' ' + (n === 1 ? one : many);
  }

  // ----- the room list -----

  function initIndex() {
    const list = $('#room-list');
    const status = $('#rooms-status');
    const form = $('#create-form');
    const input = $('#room-name');
    const createError = $('#create-error');
    let fresh = null;

    function render(rooms) {
      list.replaceChildren(...rooms.map((room) => {
        const li = el('li');
        const a = el('a');
        a.href = '/rooms/' + encodeURIComponent(room.id);
        a.append(el('span', 'room-name', room.name), el('span', 'badge', plural(room.members, 'member', 'members')));
        li.append(a);
        if (room.id === fresh) li.className = 'fresh';
        return li;
      }));
      status.hidden = rooms.length > 0;
      status.textContent = rooms.length ? '' : 'No rooms yet. Create the first one below.';
    }

    async function refresh() {
      try {
        const result = await fetchJSON('/api/rooms');
        if (!result.ok || !Array.isArray(result.body)) throw new Error(errorText(result));
        render(result.body);
      } catch (e) {
        status.hidden = false;
        status.textContent = 'Could not load the rooms: ' + e.message;
      }
    }

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const name = input.value.trim();
      createError.hidden = true;
      if (!name) {
        createError.textContent = 'Please enter a name.';
        createError.hidden = false;
        return;
      }
      try {
        const result = await fetchJSON('/api/rooms', {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json' },
          body: JSON.stringify({ name }),
        });
        if (result.status !== 201) throw new Error(errorText(result));
        input.value = '';
        fresh = result.body.id;
        await refresh();
      } catch (e) {
        createError.textContent = e.message;
        createError.hidden = false;
      }
    });

    $('#refresh').addEventListener('click', refresh);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) refresh();
    });
    setInterval(() => {
      if (!document.hidden) refresh();
    }, 5000);
    refresh();
  }

  // ----- a room -----

  const STATE_LABELS = {
    idle: 'offline',
    connecting: 'connecting…',
    connected: 'connected',
    reconnecting: 'reconnecting…',
  };
  const MAX_SHOWN = 500;

  function storage() {
    try {
      return window.localStorage;
    } catch (e) {
      return null; // disabled storage: nothing remembered
    }
  }

  /** A random secret that lets this browser take its nickname back after a reconnect. */
  function clientId() {
    const store = storage();
    let id = store && store.getItem('sockeye.clientId');
    if (!id || !/^[0-9a-f]{32}$/.test(id)) {
      const bytes = new Uint8Array(16);
      crypto.getRandomValues(bytes);
      id = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
      if (store) store.setItem('sockeye.clientId', id);
    }
    return id;
  }

  function initRoom() {
    const roomId = decodeURIComponent(location.pathname.split('/')[2] || '');
    const messagesEl = $('#messages');
    const memberList = $('#member-list');
    const memberCount = $('#member-count');
    const joinForm = $('#join-form');
    const sendForm = $('#send-form');
    const nickInput = $('#nickname');
    const messageInput = $('#message');
    const errorEl = $('#error');
    const connEl = $('#conn-state');
    const store = storage();
    const me = { nickname: (store && store.getItem('sockeye.nickname')) || '', clientId: clientId() };

    const state = {
      messages: new Map(), // id → message
      members: new Set(),
      snapshotId: 0, // the newest message id the member snapshot includes
      wantJoin: false, // (re-)JOIN on every connect
      joined: false,
    };

    nickInput.value = me.nickname;
    let client = null; // made below, once the handlers it calls exist

    function showError(text) {
      errorEl.textContent = text;
      errorEl.hidden = !text;
    }

    function showState(s) {
      connEl.textContent = STATE_LABELS[s] || s;
      connEl.className = 'conn conn-' + s;
      // Which transport carries the connection, for the curious (and the browser test).
      connEl.title = s === 'connected' && client
        ? 'over ' + (client.transport === 'sockjs' ? 'SockJS (HTTP)' : 'WebSocket')
        : '';
      updateForms();
    }

    function updateForms() {
      joinForm.hidden = state.joined;
      sendForm.hidden = !state.joined;
      const connected = client && client.connected;
      for (const b of sendForm.querySelectorAll('button')) b.disabled = !connected;
      joinForm.querySelector('button').disabled = false;
      $('#me').textContent = me.nickname;
    }

    // --- messages ---

    function formatTime(ms) {
      const d = new Date(ms);
      const today = new Date();
      const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      return d.toDateString() === today.toDateString() ? time : d.toLocaleDateString() + ' ' + time;
    }

    function renderMessage(m) {
      const li = el('li', 'msg msg-' + String(m.type).toLowerCase());
      li.dataset.id = String(m.id);
      const when = el('time', 'when', formatTime(m.timestamp));
      when.dateTime = new Date(m.timestamp).toISOString();
      li.append(when);
      if (m.type === 'TALK') {
        li.append(el('span', 'sender', m.sender), el('span', 'text', m.message));
        if (state.joined && m.sender === me.nickname) li.classList.add('mine');
      } else {
        li.append(el('span', 'text', m.message));
      }
      return li;
    }

    function addMessage(m) {
      if (!m || typeof m.id !== 'number' || m.roomId !== roomId || state.messages.has(m.id)) return false;
      state.messages.set(m.id, m);
      const nearBottom = messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 80;
      const li = renderMessage(m);
      // Usually the newest; history may fill in older ones.
      let before = null;
      for (let node = messagesEl.lastElementChild; node; node = node.previousElementSibling) {
        if (Number(node.dataset.id) < m.id) break;
        before = node;
      }
      messagesEl.insertBefore(li, before);
      while (messagesEl.children.length > MAX_SHOWN) {
        state.messages.delete(Number(messagesEl.firstElementChild.dataset.id));
        messagesEl.firstElementChild.remove();
      }
      if (nearBottom || before === null) messagesEl.scrollTop = messagesEl.scrollHeight;
      return true;
    }

    // --- members: the snapshot from GET /api/rooms/{id}, then JOIN/LEAVE messages after it ---

    function applyMembership(m) {
      if (m.id <= state.snapshotId) return;
      if (m.type === 'JOIN') state.members.add(m.sender);
      else if (m.type === 'LEAVE') state.members.delete(m.sender);
    }

    function renderMembers() {
      const names = Array.from(state.members).sort((a, b) => a.localeCompare(b, undefined, { sensitivity: 'base' }));
      memberList.replaceChildren(...names.map((n) => {
        const li = el('li', n === me.nickname && state.joined ? 'me-member' : '', n);
        return li;
      }));
      memberCount.textContent = String(names.length);
    }

    function applyDetail(detail) {
      document.title = detail.name + ' · Sockeye Chat';
      $('#room-name').textContent = detail.name;
      for (const m of detail.history) addMessage(m);
      state.members = new Set(detail.members);
      state.snapshotId = detail.history.reduce((max, m) => Math.max(max, m.id), 0);
      // Changes we saw that the snapshot missed.
      const later = Array.from(state.messages.values())
        .filter((m) => m.id > state.snapshotId)
        .sort((a, b) => a.id - b.id);
      for (const m of later) applyMembership(m);
      renderMembers();
    }

    async function loadDetail() {
      const result = await fetchJSON('/api/rooms/' + encodeURIComponent(roomId));
      if (result.status === 404) return null;
      if (!result.ok) throw new Error(errorText(result));
      applyDetail(result.body);
      return result.body;
    }

    // --- STOMP ---

    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // STOMP over WebSocket, or over SockJS where WebSocket is missing or blocked.
    const fallback = window.SockeyeSockJS
      ? { url: location.protocol + '//' + location.host + '/sockjs', Socket: window.SockeyeSockJS.Socket }
      : null;
    client = new window.SockeyeStomp.Client(proto + '//' + location.host + '/ws', {
      fallback,
      onStateChange: showState,
      onConnect: () => {
        if (state.wantJoin) sendJoin();
        else loadDetail().catch(() => {}); // catch up on what we missed while away
      },
      onStompError: (frame) => showError('Server error: ' + (frame.headers.message || 'unknown')),
    });

    function json(message) {
      try {
        return JSON.parse(message.body);
      } catch (e) {
        return null;
      }
    }

    client.subscribe('/topic/rooms.' + roomId, (message) => {
      const m = json(message);
      if (addMessage(m)) {
        applyMembership(m);
        renderMembers();
      }
    });

    client.subscribe('/user/queue/history', (message) => {
      const list = json(message);
      if (!Array.isArray(list) || (list.length && list[0].roomId !== roomId)) return;
      state.joined = true;
      showError('');
      updateForms();
      for (const m of list) addMessage(m);
      for (const li of messagesEl.querySelectorAll('.msg-talk')) {
        const m = state.messages.get(Number(li.dataset.id));
        li.classList.toggle('mine', Boolean(m) && m.sender === me.nickname);
      }
      messagesEl.scrollTop = messagesEl.scrollHeight;
      // The members now, with us among them.
      loadDetail().catch((e) => showError('Could not load the members: ' + e.message));
      messageInput.focus();
    });

    client.subscribe('/user/queue/errors', (message) => {
      const e = json(message);
      if (!e) return;
      if (e.roomId && e.roomId !== roomId) return;
      showError(e.error || 'Something went wrong');
      if (e.code === 'nickname_taken' || e.code === 'invalid_nickname' || e.code === 'not_in_room') {
        state.joined = false;
        state.wantJoin = false;
        updateForms();
        nickInput.focus();
        nickInput.select();
      }
    });

    function sendJoin() {
      const ok = client.send('/app/chat.join', JSON.stringify({
        roomId,
        type: 'JOIN',
        sender: me.nickname,
        clientId: me.clientId,
      }), { 'content-type': 'application/json' });
      if (!ok) showError('Not connected yet: joining as soon as the connection is back.');
    }

    joinForm.addEventListener('submit', (event) => {
      event.preventDefault();
      const nickname = nickInput.value.trim();
      if (!nickname) {
        showError('Please pick a nickname.');
        return;
      }
      if (Array.from(nickname).length > 32) {
        showError('Nicknames are at most 32 characters.');
        return;
      }
      me.nickname = nickname;
      if (store) store.setItem('sockeye.nickname', nickname);
      state.wantJoin = true;
      showError('');
      if (client.connected) sendJoin();
      else client.activate();
    });

    sendForm.addEventListener('submit', (event) => {
      event.preventDefault();
      const text = messageInput.value;
      if (!text.trim()) return;
      if (Array.from(text.trim()).length > 2000) {
        showError('Messages are at most 2000 characters.');
        return;
      }
      const ok = client.send('/app/chat.send', JSON.stringify({ roomId, type: 'TALK', message: text }), {
        'content-type': 'application/json',
      });
      if (ok) {
        messageInput.value = '';
        showError('');
      } else {
        showError('Not connected: the message was not sent.');
      }
    });

    $('#leave').addEventListener('click', () => {
      client.send('/app/chat.leave', JSON.stringify({ roomId, type: 'LEAVE' }), {
        'content-type': 'application/json',
      });
      state.wantJoin = false;
      state.joined = false;
      updateForms();
      showError('');
      nickInput.focus();
    });

    window.addEventListener('online', () => client.reconnectNow());
    window.addEventListener('pagehide', () => client.deactivate());
    window.addEventListener('pageshow', (event) => {
      if (event.persisted) client.activate(); // back from the back-forward cache
    });

    showState(client.state);
    loadDetail()
      .then((detail) => {
        if (!detail) {
          $('#room-name').textContent = 'Room not found';
          document.title = 'Room not found · Sockeye Chat';
          showError('There is no such room. Go back to the list of rooms.');
          joinForm.hidden = true;
          return;
        }
        // Watch the room right away; join at once if we have a nickname from before.
        state.wantJoin = Boolean(me.nickname);
        client.activate();
      })
      .catch((e) => showError('Could not load the room: ' + e.message));
  }

  const page = document.body.dataset.page;
  if (page === 'index') initIndex();
  else if (page === 'room') initRoom();
})();
