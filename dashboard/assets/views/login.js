// The login: a bearer token the root accepts (an admin token from `oakestra token
// create --admin`), or the user and password of Oakestra's login (`admin` and the
// password in the root's data directory), whose session is a bearer token too.

import { loginWithPassword, loginWithToken } from '../api.js';
import { h, title } from '../dom.js';

export function show(main, done, why) {
  const problem = h('p', { class: 'error', role: 'alert', hidden: true });
  const fail = (e) => {
    problem.hidden = false;
    problem.textContent = e.code === 401 ? 'The API refused this token (401).' : `Login failed: ${e.message}`;
  };
  const busy = (form, on) => form.querySelectorAll('button, input').forEach((x) => (x.disabled = on));

  const user = h('input', { id: 'login-user', name: 'username', autocomplete: 'username', value: 'admin', required: true });
  const password = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const byPassword = h(
    'form',
    {
      class: 'card',
      id: 'login-password-form',
      'aria-labelledby': 'login-password-title',
      on: {
        submit: async (e) => {
          e.preventDefault();
          busy(byPassword, true);
          try {
            await loginWithPassword(user.value.trim(), password.value);
            done();
          } catch (err) {
            fail(err);
            busy(byPassword, false);
          }
        },
      },
    },
    h('h2', { id: 'login-password-title' }, 'User and password'),
    h('p', { class: 'hint' }, 'Oakestra’s login: the user ', h('code', {}, 'admin'), ' and the password in ',
      h('code', {}, 'DATA/root/oakestra-api-password'), ' (', h('code', {}, 'oakestra up'),
      ') or the root’s ', h('code', {}, 'DATA/oakestra-api-password'), '.'),
    h('label', { for: 'login-user' }, 'User'),
    user,
    h('label', { for: 'login-password' }, 'Password'),
    password,
    h('button', { type: 'submit', class: 'primary' }, 'Log in'),
  );

  const token = h('input', { id: 'login-token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true });
  const byToken = h(
    'form',
    {
      class: 'card',
      id: 'login-token-form',
      'aria-labelledby': 'login-token-title',
      on: {
        submit: async (e) => {
          e.preventDefault();
          busy(byToken, true);
          try {
            await loginWithToken(token.value.trim());
            done();
          } catch (err) {
            fail(err);
            busy(byToken, false);
          }
        },
      },
    },
    h('h2', { id: 'login-token-title' }, 'Bearer token'),
    h('p', { class: 'hint' }, 'An administrator’s token: ',
      h('code', {}, 'oakestra token create --admin --data-dir DATA/root'),
      '. (The admin kubeconfig holds a client certificate, which a browser cannot send here.)'),
    h('label', { for: 'login-token' }, 'Token'),
    token,
    h('button', { type: 'submit', class: 'primary' }, 'Log in with the token'),
  );

  main.append(
    h(
      'section',
      { class: 'login' },
      title('Log in to Oakestra'),
      why ? h('p', { class: 'notice', role: 'status' }, why) : null,
      problem,
      h('div', { class: 'login-forms' }, byPassword, byToken),
      h('p', { class: 'hint' }, 'The session is kept in this tab only and ends when it closes.'),
    ),
  );
  (why ? password : user.value ? password : user).focus();
  return { stop() {} };
}
