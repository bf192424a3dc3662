export { Emitter, type EventMap, type Listener } from './emitter.js';
export { WaygateError, type ErrorBody } from './errors.js';
export { HEARTBEAT_TIMEOUT, type DisconnectInfo, type LinkOptions, type SocketLike, type WebSocketCtor } from './link.js';
export {
  Waygate,
  Subscription,
  type ChannelMessage,
  type Gap,
  type Presence,
  type PresenceMember,
  type SubscribeOptions,
  type Subscribed,
  type SubscriptionEvents,
  type WaygateEvents,
  type WaygateOptions,
  type Welcome,
} from './waygate.js';
export {
  DeviceClient,
  type DeviceClientEvents,
  type DeviceClientOptions,
  type Registered,
  type ToolCallContext,
  type ToolHandler,
} from './device.js';
export {
  TerminalClient,
  TERMINAL_PROTOCOL,
  type TerminalClientOptions,
  type TerminalClose,
  type TerminalEvents,
  type TerminalToken,
} from './terminal.js';
