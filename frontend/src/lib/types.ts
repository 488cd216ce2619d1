// Wire types of the public Rooms API (docs/api.md).

export interface Message {
  id: string;
  seq: number;
  room_id: string;
  user_id: string;
  nickname: string;
  content: string;
  time_created: string;
  client_msg_id?: string;
}

export interface Room {
  id: string;
  name: string;
  time_created: string;
  last_seq?: number;
}

export interface RoomClient {
  user_id: string;
  nickname: string;
}

export interface LoginResponse {
  user_id: string;
  nickname: string;
  access_token: string;
  refresh_token: string;
  expires_in: number;
}

// Server → client frames of rooms.v2.
export type ServerFrame =
  | {
      type: 'welcome';
      room_id: string;
      user_id: string;
      nickname: string;
      last_seq: number;
      recovered: boolean;
    }
  | ({ type: 'message' } & Message)
  | { type: 'ack'; client_msg_id: string }
  | { type: 'error'; code: string; message: string; client_msg_id?: string }
  | { type: 'presence'; event: 'join' | 'leave'; user_id: string; nickname: string }
  | { type: 'typing'; user_id: string; nickname: string }
  | { type: 'pong' };

// Client → server frames of rooms.v2.
export type ClientFrame =
  | { type: 'send'; content: string; client_msg_id: string }
  | { type: 'typing' }
  | { type: 'ping' };
